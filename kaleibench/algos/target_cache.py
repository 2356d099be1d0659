"""The target networks' values of stored episodes, kept until the target networks change.

Why: between two hard target syncs the target agent network and the target mixer's
hypernetworks are constant functions, and a stored episode's inputs never change, so its target
Q-values Q⁻(τ, ·) and the target mixer's weights of its states are the same every time the
episode is sampled. Uniform sampling of 32 episodes per update draws many episodes more
than once between syncs (every 200 updates): in a simulation of the training loop's sampling
(8 episodes collected, then 8 updates) about 83 % of the draws of a 50k-step run, 57 % of a
200k-step run and 44 % of a 2M-step run (5,000-episode buffer) repeat an episode already
evaluated since the last sync. The target pass is about a quarter of a QMIX update's
matrix-product work (0.16 of 0.64 GFLOP on spread). Memory: per stored episode
(T+1)·N·A + T·(N·E + 2E + 1) floats, 16 KB on spread (88 MB for a full 5,000-episode buffer).

When: the QMIX learner computes the values ahead of the updates, in wide passes (see
:meth:`~kaleibench.algos.qmix.Qmix.fill_target_cache`): for the episodes it has just stored,
and for the whole buffer right after each sync. Inside an update, a pass over the few
episodes still missing costs nearly as much as one over all 32 (its 26 steps are sequential),
so computing them there cost up to 2.5 ms per update. Anything still missing when sampled
(e.g. after loading an older checkpoint) is computed in the update, as before.

The values are exactly what the target network gives on the episode (same function, same
weights); a matrix product of another batch composition may round differently, so the cache is
part of the learner's checkpoint and a resumed run reads the same values.

Identity: an entry belongs to the buffer slot's current episode (by its serial number, see
:class:`~kaleibench.train.buffer.ReplayBuffer`), so an overwritten slot is a miss; a target
sync clears everything. Soft (Polyak) target updates change the network every update, so the
learner does not use a cache then.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kaleibench.utils import native

SOURCE = str(Path(__file__).with_name("cache_kernels.c"))
SIGNATURES: native.Signatures = {
    "scatter_episodes": ([native.P, *[native.I64] * 5, native.P, native.P, native.I64],
                         native.INT),
}


def _scatter(store: torch.Tensor, slots: torch.Tensor, values: torch.Tensor) -> bool:
    """``store[slots] = values`` in one C call (``cache_kernels.c``) for float32 values whose
    per-step blocks are contiguous (e.g. a time-major array's (B, T, ...) view); False, with
    nothing written, where the kernels are unavailable or the layout is another."""
    lib = native.load_declared(SOURCE, SIGNATURES)
    if (lib is None or values.dtype != torch.float32 or store.dtype != torch.float32
            or values.dim() < 2 or values.shape[1:] != store.shape[1:]
            or not store.is_contiguous() or slots.dtype != torch.int64
            or not slots.is_contiguous() or values.shape[0] != slots.shape[0]):
        return False
    block = math.prod(values.shape[2:])
    if block > 1 and not values[0, 0].is_contiguous():
        return False
    status = lib.scatter_episodes(values.data_ptr(), values.stride(0), values.stride(1), block,
                                  values.shape[1], values.shape[0], slots.data_ptr(),
                                  store.data_ptr(), store.shape[0])  # fmt: skip
    if status != 0:
        raise IndexError(f"target cache: a slot outside [0, {store.shape[0]})")
    return True


class TargetQCache:
    """Per buffer slot: the serial number of the episode whose target values are stored, and
    the values (any number of per-episode tensors, e.g. Q⁻ (T+1, N, A) and mixing weights)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ids = torch.full((capacity,), -1, dtype=torch.long)
        self.values: tuple[torch.Tensor, ...] | None = None  # each (capacity, ...), lazily
        self.last_hit_rate = 0.0
        """Share of the last call's episodes that were served from the cache."""

    def clear(self) -> None:
        """Forget every entry (the target network changed)."""
        self.ids.fill_(-1)

    def put(self, slots: torch.Tensor, ids: torch.Tensor, values: tuple[torch.Tensor, ...]
            ) -> None:
        """Store ``values`` (each (B, ...)) of the episodes with serial numbers ``ids`` in
        buffer ``slots`` (both (B,))."""
        if self.values is None:
            self.values = tuple(a.new_zeros((self.capacity, *a.shape[1:])) for a in values)
        for store, a in zip(self.values, values, strict=True):
            if not _scatter(store, slots, a):
                store[slots] = a
        self.ids[slots] = ids

    def get(self, slots: torch.Tensor, ids: torch.Tensor,
            compute: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
            ) -> tuple[torch.Tensor, ...]:
        """The values (each (B, ...)) of the episodes in buffer ``slots`` with serial numbers
        ``ids`` (both (B,)); ``compute(rows)`` gives them for the batch rows ``rows`` (indices
        into the B sampled episodes) that are not stored yet."""
        hit = self.ids.index_select(0, slots) == ids  # (B,)
        n_hit = int(hit.sum())
        self.last_hit_rate = n_hit / len(slots)
        if n_hit == 0:  # nothing to gather: the fresh values are the answer
            fresh = compute(torch.arange(len(slots)))
            self.put(slots, ids, fresh)
            return tuple(fresh)
        if n_hit < len(slots):
            rows = (~hit).nonzero().squeeze(1)  # (misses,)
            fresh = compute(rows)  # each (misses, ...)
            self.put(slots[rows], ids[rows], fresh)
        assert self.values is not None
        return tuple(store.index_select(0, slots) for store in self.values)

    def state_dict(self) -> dict[str, Any]:
        """The serial numbers and the value arrays, whole. The arrays are the cache's own (to be
        serialised at once, as a checkpoint is): a copy of the stored entries would double the
        cache's memory while saving."""
        return {"ids": self.ids.clone(),
                "values": None if self.values is None else list(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a cache of the same capacity)."""
        ids, values = state["ids"], state["values"]
        if ids.shape != self.ids.shape:
            raise ValueError(f"target cache of capacity {len(ids)}, expected {self.capacity}")
        self.ids = ids.clone()
        self.values = None if values is None else tuple(a.clone() for a in values)
