"""kaleibench: cooperative MARL benchmark suite with QMIX, Kalei-QMIX, ALMA and ALMA+MINE."""

from __future__ import annotations

from kaleibench.envs import make, task_spec

__version__ = "0.1.0"
__all__ = ["__version__", "make", "task_spec"]
