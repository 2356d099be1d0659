"""Partial observability: a pinned sight radius applied the same way to both views of a task.

A task with ``TaskSpec.sight_radius = R`` hides from each controlled agent every entity whose
centre is farther than ``R`` from the agent's centre (Euclidean, world units; the arena starts
in [-1, 1]²). "Visible" is ``‖p_target − p_viewer‖ ≤ R``, computed by :func:`visible` from the
world positions in float64 — the flat observation and the entity view call the same function on
the same positions, so they never disagree.

Flat observation (QMIX family), per agent: ``[masked, flags]`` where ``masked`` is the full
observation of the fully observed task with every column that describes a hidden entity set to
0.0 (relative position, communication, velocity), and ``flags`` holds one 0/1 visibility flag per
observed entity, in the order the observation lists them (:func:`sight_layout`). Own velocity and
own position are always kept. The state stays global: it is the concatenation of the *unmasked*
observations, exactly the fully observed task's state, so the mixer sees everything.

Entity view (ALMA): ``obs_mask[e, f]`` is :func:`visible` between view entities ``e`` and ``f``
(every pair, so the diagonal is always True); the entity features themselves are the global
state and stay unmasked — agents' attention is restricted by ``obs_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from kaleibench.envs.base import TaskSpec


@dataclass(frozen=True)
class SightLayout:
    """Which world entity each part of a team agent's flat observation describes."""

    radius: float
    team: np.ndarray  # (N,) world entity index of each controlled agent
    slots: np.ndarray  # (N, S) world entity index of each observed entity, in observation order
    column_slot: np.ndarray  # (O,) slot governing each observation column; -1 = always kept

    @property
    def n_slots(self) -> int:
        """S: the number of visibility flags appended to each observation."""
        return int(self.slots.shape[1])

    @property
    def full_size(self) -> int:
        """O: the size of the fully observed observation."""
        return len(self.column_slot)


def _others(n: int, i: int) -> list[int]:
    return [j for j in range(n) if j != i]


@lru_cache(maxsize=64)
def sight_layout(spec: TaskSpec) -> SightLayout | None:
    """The sight layout of ``spec``, or None for a fully observed task.

    * spread (N agents): world = agents 0..N-1, landmarks N..2N-1; observation
      ``[vel 2, pos 2, landmarks 2N, other agents 2(N-1), other agents' comm 2(N-1)]``;
      slots = landmarks, then the other agents (their position *and* message columns).
    * tag (P predators, G prey, O obstacles): world = predators, prey, obstacles; observation
      ``[vel 2, pos 2, obstacles 2O, other agents 2(P+G-1), prey velocities 2G]``; slots =
      obstacles, then the other agents (predators, then prey); prey g's velocity columns follow
      prey g's slot.

    Raises:
        ValueError: if the scenario has no sight layout.
    """
    if spec.sight_radius is None:
        return None
    kw = dict(spec.kwargs)
    if spec.scenario == "simple_spread_v3":
        n = int(kw["N"])
        names = [f"agent_{i}" for i in range(n)]
        team = np.array([names.index(a) for a in spec.team])
        slots = np.array([[n + j for j in range(n)] + _others(n, i) for i in team])
        cols = [-1] * 4 + [j // 2 for j in range(2 * n)]
        cols += [n + j // 2 for j in range(2 * (n - 1))]  # other agents' positions
        cols += [n + j // 2 for j in range(2 * (n - 1))]  # their messages (dim_c = 2)
    elif spec.scenario == "simple_tag_v3":
        p, g, o = int(kw["num_adversaries"]), int(kw["num_good"]), int(kw["num_obstacles"])
        names = [*(f"adversary_{i}" for i in range(p)), *(f"agent_{i}" for i in range(g))]
        team = np.array([names.index(a) for a in spec.team])
        if np.any(team >= p):
            raise ValueError(f"task {spec.id}: only predators can be partially observing")
        a = p + g
        slots = np.array([[a + j for j in range(o)] + _others(a, i) for i in team])
        cols = [-1] * 4 + [j // 2 for j in range(2 * o)]
        cols += [o + j // 2 for j in range(2 * (a - 1))]
        cols += [o + (p - 1) + j // 2 for j in range(2 * g)]  # prey g is other agent p-1+g
    else:
        raise ValueError(f"task {spec.id}: no sight layout for scenario {spec.scenario!r}")
    return SightLayout(float(spec.sight_radius), team, slots, np.array(cols, dtype=np.int64))


def visible(pos: np.ndarray, viewers: np.ndarray, targets: np.ndarray,
            radius: float) -> np.ndarray:
    """Whether each viewer sees each of its targets.

    Args:
        pos: (B, W, 2) float64 world positions (mpe2 ``world.entities`` order).
        viewers: (V,) world indices; targets: (V, T) world indices seen by each viewer.
        radius: sight radius R.

    Returns:
        (B, V, T) bool: ``‖pos[target] − pos[viewer]‖ ≤ R``.

    Examples:
        >>> pos = np.array([[[0.0, 0.0], [0.3, 0.4], [1.0, 1.0]]])
        >>> visible(pos, np.array([0]), np.array([[1, 2]]), 0.5).tolist()
        [[[True, False]]]
    """
    delta = pos[:, targets] - pos[:, viewers][:, :, None]  # (B, V, T, 2)
    dx, dy = delta[..., 0], delta[..., 1]
    return np.sqrt(dx * dx + dy * dy) <= radius


def observe(layout: SightLayout, full_obs: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The partially observed flat observations.

    Args:
        layout: the task's sight layout.
        full_obs: (B, N, O) float32 fully observed team observations.
        pos: (B, W, 2) float64 world positions.

    Returns:
        (B, N, O + S) float32: hidden entities' columns zeroed, then the S visibility flags.
    """
    flags = visible(pos, layout.team, layout.slots, layout.radius)  # (B, N, S)
    keep = np.concatenate([np.ones((*flags.shape[:2], 1), dtype=bool), flags], axis=2)
    column_keep = keep[:, :, layout.column_slot + 1]  # (B, N, O); slot -1 -> index 0 (kept)
    masked = np.where(column_keep, full_obs, np.float32(0.0))
    return np.concatenate([masked, flags.astype(np.float32)], axis=2)


def split(layout: SightLayout, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(masked observation (..., O), visibility flags (..., S) bool) of a sight-limited ``obs``."""
    o = layout.full_size
    return obs[..., :o], obs[..., o : o + layout.n_slots] > 0.5
