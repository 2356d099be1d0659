"""Optional TensorBoard sink: the rows of ``metrics.jsonl`` as TensorBoard scalars.

Install with ``pip install 'kaleibench[tensorboard]'`` and run with ``kaleibench run
--tensorboard``; then ``tensorboard --logdir <results>``. Every numeric key of a ``train`` or
``eval`` row (except ``t_env`` itself) becomes the scalar ``<kind>/<key>`` at step ``t_env``:
``train/loss_td``, ``train/div_coef``, ``train/sparsity/...``, ``eval/return_mean``, ... so the
event files hold exactly what the JSONL holds (TensorBoard stores scalars as float32). The JSONL
stays the source of truth: on a resumed run the event folder is rebuilt from it, so rows cut
back to the checkpoint never linger in TensorBoard either.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TB_DIR = "tensorboard"
"""Folder of a run's event files, inside the run folder."""
_SKIP = ("kind", "t_env")


class TensorBoardUnavailable(ImportError):
    """The ``tensorboard`` package is not installed."""


def require_tensorboard() -> None:
    """Raise :class:`TensorBoardUnavailable` with the install command if it is missing."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise TensorBoardUnavailable(
            "--tensorboard needs the tensorboard package: pip install 'kaleibench[tensorboard]' "
            f"({exc})") from exc


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of one metrics row: ``{"<kind>/<key>": value}``.

    Booleans, strings, lists (e.g. the per-episode ``returns``) and non-finite values are left
    out; so are ``kind`` and ``t_env`` (the step).

    Examples:
        >>> scalars({"kind": "eval", "t_env": 400, "return_mean": -3.5, "returns": [1.0]})
        {'eval/return_mean': -3.5}
    """
    kind = str(row.get("kind", "metrics"))
    out = {}
    for key, value in row.items():
        if key in _SKIP or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[f"{kind}/{key}"] = float(value)
    return out


class TensorBoardSink:
    """Writes metrics rows as TensorBoard scalars under ``<run_dir>/tensorboard``."""

    def __init__(self, log_dir: str | Path, replay: Iterable[dict[str, Any]] = ()) -> None:
        """Start a fresh event folder, first writing ``replay`` (the rows already in the JSONL).

        Args:
            log_dir: The event folder; anything in it is removed first.
            replay: Rows already logged (on resume, the JSONL cut back to the checkpoint).
        """
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        if self.log_dir.exists():
            shutil.rmtree(self.log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        for row in replay:
            self.write(row)

    def write(self, row: dict[str, Any]) -> None:
        """Add the scalars of one metrics row at step ``row["t_env"]``."""
        step = int(row.get("t_env", 0))
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.flush()
        self.writer.close()
