"""Train metrics over a logging interval: means of per-update values, sums of counts.

A learner performs many updates between two train rows of ``metrics.jsonl``. Logging only the
last update's values would hide whatever happened in the others (a mask reset in the first of
eight updates, a loss spike); the row therefore holds each metric's mean over the interval's
updates, and the sum for event counts.
"""

from __future__ import annotations

from collections.abc import Mapping

COUNTS = frozenset({"n_reset"})
"""Metrics that count events: summed over the interval (absent from an update = 0)."""
STATES = frozenset({"epsilon", "n_updates"})
"""Metrics that describe the state at the end of the interval: the last value is kept."""


class IntervalStats:
    """Accumulates metric dicts; :meth:`summary` gives means, sums of counts, last states.

    ``storage`` (optional) is a plain dict the accumulator keeps its sums in, so that a
    checkpointed owner (the training loop's state) resumes a half-finished interval exactly.
    """

    def __init__(self, storage: dict[str, dict[str, float]] | None = None) -> None:
        storage = {} if storage is None else storage
        self._sum = storage.setdefault("sum", {})
        self._n = storage.setdefault("n", {})
        self._last = storage.setdefault("last", {})

    def clear(self) -> None:
        """Start a new interval."""
        for part in (self._sum, self._n, self._last):
            part.clear()

    def add(self, stats: Mapping[str, float], weight: int = 1) -> None:
        """Fold in one update's (or ``weight`` updates' mean) metrics."""
        for key, value in stats.items():
            if key in STATES:
                self._last[key] = float(value)
                continue
            w = 1 if key in COUNTS else weight
            self._sum[key] = self._sum.get(key, 0.0) + w * float(value)
            self._n[key] = self._n.get(key, 0) + weight

    def summary(self) -> dict[str, float]:
        """Means (sums for :data:`COUNTS`, last value for :data:`STATES`); empty if nothing."""
        out = {k: (v if k in COUNTS else v / self._n[k]) for k, v in self._sum.items()}
        out.update(self._last)
        return out

    def __bool__(self) -> bool:
        return bool(self._sum or self._last)
