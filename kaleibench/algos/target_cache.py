"""The target network's Q-values of stored episodes, kept until the target network changes.

Why: between two hard target syncs the target agent network is a constant function, and a
stored episode's inputs never change, so its target Q-values Q⁻(τ, ·) are the same every time
the episode is sampled. Uniform sampling of 32 episodes per update draws many episodes more
than once between syncs (every 200 updates): in a simulation of the training loop's sampling
(8 episodes collected, then 8 updates) about 83 % of the draws of a 50k-step run, 57 % of a
200k-step run and 44 % of a 2M-step run (5,000-episode buffer) repeat an episode already
evaluated since the last sync. The target pass is about a sixth of a QMIX update's work.

The values are exactly what the target network gives on the episode (same function, same
weights), computed when the episode is first drawn after a sync, in a batch of that update's
other new episodes; a matrix product of another batch composition may round differently, so
the cache is part of the learner's checkpoint and a resumed run reads the same values.

Identity: an entry belongs to the buffer slot's current episode (by its serial number, see
:class:`~kaleibench.train.buffer.ReplayBuffer`), so an overwritten slot is a miss; a target
sync clears everything. Soft (Polyak) target updates change the network every update, so the
learner does not use a cache then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class TargetQCache:
    """Per buffer slot: the serial number of the episode whose target Q-values are stored."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ids = torch.full((capacity,), -1, dtype=torch.long)
        self.values: torch.Tensor | None = None  # (capacity, T+1, N, A), allocated at first use
        self.last_hit_rate = 0.0
        """Share of the last call's episodes that were served from the cache."""

    def clear(self) -> None:
        """Forget every entry (the target network changed)."""
        self.ids.fill_(-1)

    def get(self, slots: torch.Tensor, ids: torch.Tensor,
            compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Target Q-values (B, T+1, N, A) of the episodes in buffer ``slots`` with serial
        numbers ``ids`` (both (B,)); ``compute(rows)`` gives them for the batch rows ``rows``
        (indices into the B sampled episodes) that are not stored yet."""
        hit = self.ids[slots] == ids  # (B,)
        n_hit = int(hit.sum())
        self.last_hit_rate = n_hit / len(slots)
        if n_hit < len(slots):
            rows = (~hit).nonzero().squeeze(1)  # (misses,)
            fresh = compute(rows)  # (misses, T+1, N, A)
            if self.values is None:
                self.values = fresh.new_zeros((self.capacity, *fresh.shape[1:]))
            self.values[slots[rows]] = fresh
            self.ids[slots[rows]] = ids[rows]
        assert self.values is not None
        return self.values[slots]

    def state_dict(self) -> dict[str, Any]:
        """The stored entries only (slots, serial numbers, values)."""
        slots = (self.ids >= 0).nonzero().squeeze(1)
        values = self.values[slots].clone() if self.values is not None else None
        return {"slots": slots, "ids": self.ids[slots].clone(), "values": values}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (entries of the same slots and episodes)."""
        self.clear()
        values = state["values"]
        if values is None or len(state["slots"]) == 0:
            return
        if self.values is None:
            self.values = values.new_zeros((self.capacity, *values.shape[1:]))
        self.values[state["slots"]] = values
        self.ids[state["slots"]] = state["ids"]
