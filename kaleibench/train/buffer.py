"""Episode replay: preallocated padded tensors (capacity, T(+1), ...) plus a ``filled`` mask."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EpisodeBatch:
    """B whole episodes. Per-step fields are (B, T+1, ...) for observations (s_0..s_T) and
    (B, T, ...) for transitions; ``filled`` (B, T) marks real transitions.

    Core fields: obs (B, T+1, N, O), state (B, T+1, S), avail_actions (B, T+1, N, A) bool,
    actions (B, T, N) long, reward (B, T), terminated (B, T), truncated (B, T), filled (B, T).
    Variants may add more (e.g. an entity view) in ``extra``.
    """

    data: dict[str, torch.Tensor] = field(default_factory=dict)
    slots: torch.Tensor | None = None
    """(B,) buffer slots the episodes were sampled from (None for freshly collected ones)."""
    ids: torch.Tensor | None = None
    """(B,) the episodes' serial numbers in the buffer (see :class:`ReplayBuffer`)."""
    derived: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    """Tensors a learner computed from ``data`` and reuses within one update (e.g. the agent
    networks' inputs, the same for the online and the target pass)."""

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.data[key]

    def select(self, rows: torch.Tensor) -> EpisodeBatch:
        """The episodes at ``rows`` (indices into this batch's B), with their slots and ids."""
        def pick(a: torch.Tensor | None) -> torch.Tensor | None:
            return None if a is None else a[rows]

        return EpisodeBatch({k: v[rows] for k, v in self.data.items()}, slots=pick(self.slots),
                            ids=pick(self.ids))

    @property
    def batch_size(self) -> int:
        """Number of episodes B."""
        return int(next(iter(self.data.values())).shape[0])


class ReplayBuffer:
    """Ring buffer of whole episodes, sampled uniformly without replacement.

    Storage is allocated lazily at the first insert from the batch's field shapes and dtypes,
    then never reallocated (no per-step Python objects). Every inserted episode gets a serial
    number (0, 1, 2, ... in insertion order), so that a slot's current episode can be told from
    the one it overwrote (e.g. by a cache of values computed from stored episodes).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.storage: dict[str, torch.Tensor] = {}
        self.size = 0
        self.cursor = 0
        self.inserted = 0
        """Episodes inserted so far: the next episode's serial number."""
        self.ids = torch.full((capacity,), -1, dtype=torch.long)
        """Serial number of the episode in each slot (-1: empty)."""

    def insert(self, batch: EpisodeBatch) -> torch.Tensor:
        """Copy the B episodes of ``batch`` in, overwriting the oldest when full; returns the
        (B,) slots they now occupy."""
        if not self.storage:
            self.storage = {
                k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype)
                for k, v in batch.data.items()
            }
        b = batch.batch_size
        idx = (self.cursor + torch.arange(b)) % self.capacity  # (B,)
        for k, v in batch.data.items():
            self.storage[k][idx] = v
        self.ids[idx] = self.inserted + torch.arange(b)
        self.inserted += b
        self.cursor = int((self.cursor + b) % self.capacity)
        self.size = min(self.size + b, self.capacity)
        return idx

    def episodes(self, slots: torch.Tensor) -> EpisodeBatch:
        """The stored episodes at ``slots``, with their slots and serial numbers.

        ``index_select`` gives what ``v[slots]`` gives, at a third of its cost on the larger
        fields (measured: 4 against 14 µs for a 32-episode draw of the observations)."""
        return EpisodeBatch({k: v.index_select(0, slots) for k, v in self.storage.items()},
                            slots=slots, ids=self.ids.index_select(0, slots))

    def can_sample(self, batch_size: int) -> bool:
        """Whether at least ``batch_size`` episodes are stored."""
        return self.size >= batch_size

    def sample(self, batch_size: int, generator: torch.Generator) -> EpisodeBatch:
        """``batch_size`` distinct stored episodes, drawn with ``generator``."""
        if not self.can_sample(batch_size):
            raise ValueError(f"cannot sample {batch_size} episodes from {self.size}")
        idx = torch.randperm(self.size, generator=generator)[:batch_size]
        return self.episodes(idx)

    def state_dict(self) -> dict[str, object]:
        """Checkpointable state (only the filled part of the storage)."""
        return {
            "size": self.size,
            "cursor": self.cursor,
            "inserted": self.inserted,
            "ids": self.ids[: self.size].clone(),
            "storage": {k: v[: self.size].clone() for k, v in self.storage.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore from :meth:`state_dict`."""
        self.size = int(state["size"])  # type: ignore[call-overload]
        self.cursor = int(state["cursor"])  # type: ignore[call-overload]
        # checkpoints written before serial numbers existed: number the stored episodes anew
        self.inserted = int(state.get("inserted", self.size))  # type: ignore[call-overload]
        ids = state.get("ids")
        self.ids = torch.full((self.capacity,), -1, dtype=torch.long)
        self.ids[: self.size] = ids if isinstance(ids, torch.Tensor) else torch.arange(self.size)
        stored: dict[str, torch.Tensor] = state["storage"]  # type: ignore[assignment]
        self.storage = {}
        for k, v in stored.items():
            full = torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype)
            full[: v.shape[0]] = v
            self.storage[k] = full
