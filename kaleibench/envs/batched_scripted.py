"""Row-vectorised twins of the scripted opponents in :mod:`kaleibench.envs.scripted`.

Each function takes the same float32 observation pieces the scalar rule reads, for ``B`` rows at
once, and repeats the scalar rule's float32 operations in the same order, so both backends pick
the same discrete move (checked against the scalar rules in ``tests/test_batched.py``).
"""

from __future__ import annotations

import numpy as np


def steer_batch(direction: np.ndarray, deadzone: float) -> np.ndarray:
    """Vectorised :func:`kaleibench.envs.scripted.steer`.

    Args:
        direction: (B, 2) float32 desired directions.
        deadzone: no-op when the direction's length is below this (compared in float64).

    Returns:
        (B,) int64 discrete moves: 0 no-op, 1 -x, 2 +x, 3 -y, 4 +y.
    """
    dx, dy = direction[:, 0], direction[:, 1]
    length = np.hypot(dx, dy).astype(np.float64)  # (B,), float32 hypot as the scalar rule
    scores = np.stack([-dx, dx, -dy, dy], axis=1)  # (B, 4) = _MOVES @ direction
    moves = np.argmax(scores, axis=1) + 1  # (B,), first maximum wins ties as in the scalar rule
    return np.where(length < deadzone, 0, moves).astype(np.int64)


def prey_flee_batch(pos: np.ndarray, predators: np.ndarray) -> np.ndarray:
    """Vectorised :func:`kaleibench.envs.scripted.prey_flee`.

    Args:
        pos: (B, 2) float32 prey positions (observation slots 2:4).
        predators: (B, P, 2) float32 predator positions relative to the prey.

    Returns:
        (B,) int64 moves.
    """
    dist2 = np.maximum((predators**2).sum(axis=2, keepdims=True), 1e-4)  # (B, P, 1) float32
    away = -(predators / dist2).sum(axis=1)  # (B, 2), summed over predators in order
    wall = -np.sign(pos) * np.maximum(np.abs(pos) - 0.7, 0.0) * 20.0  # (B, 2)
    return steer_batch(away + wall, deadzone=1e-6)


def adversary_goal_guess_batch(landmarks: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Vectorised :func:`kaleibench.envs.scripted.adversary_to_goal_guess`.

    Args:
        landmarks: (B, L, 2) float32 landmark positions relative to the adversary.
        good: (B, G, 2) float32 good-agent positions relative to the adversary.

    Returns:
        (B,) int64 moves towards the landmark the good agents are nearest to.
    """
    diff = landmarks[:, :, None, :] - good[:, None, :, :]  # (B, L, G, 2)
    dist = np.sqrt((diff * diff).sum(axis=3))  # (B, L, G) float32, as np.linalg.norm
    nearest = np.argmin(dist.min(axis=2), axis=1)  # (B,)
    target = landmarks[np.arange(landmarks.shape[0]), nearest]  # (B, 2)
    return steer_batch(target, deadzone=0.05)
