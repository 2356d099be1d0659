"""Tensor plumbing shared by ALMA's acting and learning: allocations into the entity view,
decision-point gathering, recency-filtered sampling.

ALMA: Iqbal, Costales, Sha, NeurIPS 2022, arXiv 2206.07505. Shapes: B rows/episodes, T steps,
E entities, N agents, K subtasks, M decision points.
"""

from __future__ import annotations

import torch
from torch import nn

from kaleibench.losses.alma import MetaBatch
from kaleibench.train.buffer import EpisodeBatch, ReplayBuffer

ENTITY_STATE = ("entities", "entity_mask", "obs_mask", "entity2task", "task_mask")
"""Per-step entity fields stored (B, T+1, ...)."""


def with_alloc(entity2task: torch.Tensor, alloc: torch.Tensor) -> torch.Tensor:
    """Membership with the agents' rows set to their allocation.

    Args:
        entity2task: (..., E, K) static membership (agent rows empty); alloc: (..., N, K).

    Returns:
        (..., E, K) float.
    """
    n = alloc.shape[-2]
    return torch.cat([alloc.float(), entity2task[..., n:, :].float()], dim=-2)


def subtask_coverage(alloc: torch.Tensor, task_mask: torch.Tensor) -> torch.Tensor:
    """Fraction of the active subtasks (on MPE: landmarks) with at least one agent allocated.

    Args:
        alloc: (M, N, K) allocations; task_mask: (M, K) active subtasks.

    Returns:
        () the covered share over all M allocations. On spread (3 agents, 3 landmarks) a
        uniformly random allocation covers 1 − (2/3)³ ≈ 0.70 of the landmarks.
    """
    active = task_mask.float()
    occupied = (alloc.sum(-2) > 0).float() * active  # (M, K)
    return occupied.sum() / active.sum().clamp_min(1.0)


def last_action_onehot(actions: torch.Tensor, n_actions: int) -> torch.Tensor:
    """One-hot previous actions for steps 0..T: (B, T, N) -> (B, T+1, N, A), zeros at t = 0."""
    onehot = nn.functional.one_hot(actions, n_actions).float()  # (B, T, N, A)
    return torch.cat([torch.zeros_like(onehot[:, :1]), onehot], dim=1)


def random_allocs(task_mask: torch.Tensor, n_agents: int, gen: torch.Generator) -> torch.Tensor:
    """Each agent on a uniformly random active subtask: (B, K) -> (B, N, K) one-hot."""
    b, k = task_mask.shape
    scores = torch.rand((b, n_agents, k), generator=gen) * task_mask[:, None].float()
    return nn.functional.one_hot(scores.argmax(-1), k).float()


def gather_decisions(batch: EpisodeBatch, meta: MetaBatch) -> dict[str, torch.Tensor]:
    """Entity view, executed allocation and previous allocation at every decision point.

    Returns:
        entities (M, E, F), entity_mask (M, E), entity2task (M, E, K), task_mask (M, K),
        alloc (M, N, K) executed, last_alloc (M, N, K) (zeros at t = 0), t_added (M,).
    """
    ep, t = meta.episode, meta.t
    out = {key: batch[key][ep, t] for key in ENTITY_STATE if key != "obs_mask"}
    alloc = batch["alloc"]  # (B, T+1, N, K)
    out["alloc"] = alloc[ep, t]
    out["last_alloc"] = alloc[ep, (t - 1).clamp_min(0)] * (t > 0).float()[:, None, None]
    out["t_added"] = batch["t_added"][ep]
    return out


def sample_recent(buffer: ReplayBuffer, batch_size: int, t_env: int, decay_old: int,
                  gen: torch.Generator) -> EpisodeBatch | None:
    """Up to ``batch_size`` stored episodes with ``t_env − t_added ≤ decay_old`` (uniform)."""
    t_added = buffer.storage["t_added"][: buffer.size]  # (size,)
    recent = torch.nonzero(t_env - t_added <= decay_old).squeeze(1)  # (R,)
    if len(recent) < 2:
        return None
    pick = recent[torch.randperm(len(recent), generator=gen)[:batch_size]]
    return EpisodeBatch({k: v[pick] for k, v in buffer.storage.items()})
