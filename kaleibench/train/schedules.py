"""Exploration schedules."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearSchedule:
    """Linear from ``start`` to ``finish`` over ``duration`` env steps, then constant.

    Examples:
        >>> s = LinearSchedule(1.0, 0.05, 50_000)
        >>> s(0), s(25_000), s(50_000), s(100_000)
        (1.0, 0.525, 0.05, 0.05)
    """

    start: float
    finish: float
    duration: int

    def __call__(self, t_env: int) -> float:
        if self.duration <= 0:
            return self.finish
        frac = min(max(t_env / self.duration, 0.0), 1.0)
        return self.start + frac * (self.finish - self.start)
