"""Wall-clock and CPU time in metrics rows: how long a run took and how fast it went.

Every row of ``metrics.jsonl`` carries

* ``timestamp``: Unix time (seconds) when the row was written;
* ``wall_time``: seconds of training so far, over all of the run's (re)starts (the time between
  the last checkpoint and an interruption is lost with the work it did);
* ``cpu_time``: CPU seconds (user + system) of the run's processes so far, over all (re)starts
  (like ``wall_time``, the work lost between the last checkpoint and an interruption is not
  counted; rows written before this was cumulative restart from 0 at each resume, which
  :func:`cumulative_cpu_time` accounts for);

and ``train`` rows also ``env_steps_per_s``: env steps per wall-clock second since the previous
``train`` row (or since the (re)start).

These keys are the only ones that differ between two runs of one spec: compare rows with
:func:`strip_timing`.
"""

from __future__ import annotations

import time
from typing import Any

TIMING_KEYS = ("timestamp", "wall_time", "cpu_time", "env_steps_per_s")
"""Keys of a metrics row that depend on the machine and its load, not on the run's numbers."""
FINAL_TIMING_KEYS = ("steps_per_second", "wall_time_s", "cpu_time_s")
"""The same for ``final.json``."""


def strip_timing(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` without :data:`TIMING_KEYS` (for comparing runs).

    Examples:
        >>> strip_timing({"t_env": 8, "wall_time": 1.5, "loss": 0.1})
        {'t_env': 8, 'loss': 0.1}
    """
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def cumulative_cpu_time(rows: list[dict[str, Any]]) -> float:
    """CPU seconds of a run from its metrics rows, summed over restarts; NaN if none has it.

    Runs written before ``cpu_time`` was cumulative restarted it from 0 at each resume: a drop
    marks a restart, and the segment before it ends at its last kept row.
    """
    total, last, seen = 0.0, 0.0, False
    for row in rows:
        value = row.get("cpu_time")
        if not isinstance(value, int | float):
            continue
        if value < last:
            total += last
        last, seen = float(value), True
    return total + last if seen else float("nan")


class RunClock:
    """Measures one (re)start of a run; ``wall_before``/``cpu_before``: the time already spent."""

    def __init__(self, wall_before: float, cpu_before: float, t_env: int) -> None:
        self.start, self.cpu_start = time.time(), time.process_time() - cpu_before
        self.wall_before = wall_before
        self.last_t_env, self.last_wall = t_env, wall_before

    def totals(self) -> tuple[float, float]:
        """Wall and CPU seconds of the run so far, over all its (re)starts."""
        return self.wall_before + (time.time() - self.start), time.process_time() - self.cpu_start

    def fields(self, kind: str, t_env: int) -> dict[str, float]:
        """The timing keys of a row of ``kind`` written at ``t_env``."""
        now = time.time()
        wall, cpu = self.totals()
        out = {"timestamp": round(now, 3), "wall_time": round(wall, 3),
               "cpu_time": round(cpu, 3)}
        if kind == "train":
            elapsed = wall - self.last_wall
            steps = t_env - self.last_t_env
            out["env_steps_per_s"] = round(steps / elapsed, 2) if elapsed > 0 else 0.0
            self.last_t_env, self.last_wall = t_env, wall
        return out
