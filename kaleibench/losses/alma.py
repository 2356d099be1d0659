"""Loss terms of ALMA's amortized Q-learning of the allocation, as pure functions.

ALMA: Iqbal, Costales, Sha, NeurIPS 2022, arXiv 2206.07505. Shapes: B episodes, T transitions,
M decision points, P proposals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MetaBatch:
    """Decision points of a batch of episodes, flattened in (episode, time) order."""

    episode: torch.Tensor  # (M,) long episode index
    t: torch.Tensor  # (M,) long time of the decision
    reward: torch.Tensor  # (M,) segment reward Σ r / action_length
    terminated: torch.Tensor  # (M,) float, a true termination inside the segment
    mask: torch.Tensor  # (M,) float, 1 where the TD target to the next row is valid


def make_meta_batch(reward: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                    filled: torch.Tensor, decision: torch.Tensor, action_length: int,
                    timeout_is_terminal: bool = False) -> MetaBatch:
    """Segment rewards, terminations and masks of every decision point.

    A segment runs from a decision to the step before the next one in the same episode.

    * ``timeout_is_terminal=True`` (a time limit that is part of the task, every MPE task): a
      segment that reaches the time limit is a real terminal segment, its target is its reward
      alone (no bootstrap) and it is trained like any other.
    * ``False`` (an artificial limit on an unlimited task, ALMA's own setting): the value after a
      truncation is unknown, so a segment containing one gets ``mask = 0``.

    In both cases the last decision of an episode gets ``mask = 0`` unless its segment ends the
    episode for good (its next row belongs to another episode).

    Args:
        reward: (B, T) team reward; terminated, truncated, filled: (B, T);
        decision: (B, T) bool, decision points (t = 0 must be one in every episode).
        action_length: the reward scale 1 / action_length of ALMA.
        timeout_is_terminal: whether reaching the time limit ends the task.
    """
    dec = decision.bool() & filled.bool()  # (B, T)
    if not dec[:, 0].all():
        raise ValueError("every episode must start with a decision point")
    seg = torch.cumsum(dec.flatten().long(), 0) - 1  # (B*T,) segment of each step
    fill = filled.float().flatten()
    m = int(dec.sum())
    seg_r = torch.zeros(m).scatter_add(0, seg, reward.float().flatten() * fill)  # (M,)
    seg_term = torch.zeros(m).scatter_add(0, seg, terminated.float().flatten() * fill) > 0
    seg_trunc = torch.zeros(m).scatter_add(0, seg, truncated.float().flatten() * fill) > 0
    episode, t = dec.nonzero(as_tuple=True)  # (M,), (M,)
    last = torch.ones(m, dtype=torch.bool)
    last[:-1] = episode[1:] != episode[:-1]
    if timeout_is_terminal:
        seg_term = seg_term | seg_trunc
        mask = ~last | seg_term
    else:
        mask = ~seg_trunc & (~last | seg_term)
    return MetaBatch(episode, t, seg_r / action_length, seg_term.float(), mask.float())


def alloc_td_targets(seg_reward: torch.Tensor, seg_terminated: torch.Tensor,
                     target_q_next: torch.Tensor, gamma: float) -> torch.Tensor:
    """``y_m = R_m + γ (1 − d_m) Q⁻(s_{m+1}, π-best)``: γ applied once per segment.

    Args:
        seg_reward, seg_terminated: (M,) of the decision rows; target_q_next: (M,) target critic
        value of the *next* row's best proposal (row m+1; masked where it is another episode).

    Returns:
        (M − 1,) detached targets for rows 0..M−2.
    """
    return (seg_reward[:-1] + gamma * (1.0 - seg_terminated[:-1]) * target_q_next[1:]).detach()


def decay_weights(age: torch.Tensor, decay_old: int) -> torch.Tensor:
    """``w = max(0, (decay_old − age) / decay_old)``: linearly down-weight old data (env steps)."""
    return ((decay_old - age.float()) / decay_old).clamp_min(0.0)


def alloc_critic_loss(q: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
                      ) -> torch.Tensor:
    """``L_Q = Σ w (Q − y)² / Σ w`` over decision rows with a valid next row, (M−1,) each."""
    return (weights * (q - targets) ** 2).sum() / weights.sum().clamp_min(1e-8)


def amortisation_loss(log_pi_best: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor,
                      entropy_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``L_π = Σ mask (−log π(k* | s)) / Σ mask − c_H · mean H(π)``.

    Args:
        log_pi_best: (M,) log-probability of the critic's best proposal; entropy: (M, P);
        mask: (M,) decision points used; entropy_coef: c_H (0.01 in ALMA).

    Returns:
        (the amortisation term alone, the full L_π).
    """
    amort = (mask * -log_pi_best).sum() / mask.sum().clamp_min(1.0)
    return amort, amort - entropy_coef * entropy.mean()
