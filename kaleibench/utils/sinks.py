"""Optional metrics sinks besides ``metrics.jsonl``: CSV (``--csv``) and Weights & Biases
(``--wandb``), next to TensorBoard (``--tensorboard``, :mod:`kaleibench.utils.tensorboard`).

Like the TensorBoard sink, each is rebuilt from the JSONL when a run resumes, so the rows cut
back to the checkpoint never linger in it; ``metrics.jsonl`` stays the record.

* **CSV**: ``<run>/metrics.csv`` in long (tidy) form, one line per number:
  ``kind,t_env,metric,value`` (e.g. ``train,2000,loss_td,0.0132``). The columns are the same
  for every variant, whatever metrics its learner reports; pivot with pandas
  (``df.pivot_table(index=["kind", "t_env"], columns="metric", values="value")``).
* **Weights & Biases**: one W&B run per (re)start of a kaleibench run, named by the run id,
  grouped by ``<suite>/<variant>``, with the resolved spec as its config; scalars are logged as
  ``<kind>/<metric>`` at step ``t_env``. The project is ``$WANDB_PROJECT`` (default
  ``kaleibench``); ``WANDB_MODE=offline`` keeps everything local (``wandb sync`` later).
  ``wandb`` is imported only when asked for: ``pip install 'kaleibench[wandb]'``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SINKS = ("csv", "wandb")
CSV_NAME = "metrics.csv"
CSV_COLUMNS = ("kind", "t_env", "metric", "value")


class WandbUnavailable(ImportError):
    """The ``wandb`` package is not installed."""


def require_wandb() -> Any:
    """Import ``wandb``, or raise :class:`WandbUnavailable` with the install command."""
    try:
        import wandb
    except ImportError as exc:
        raise WandbUnavailable(
            "--wandb needs the wandb package: pip install 'kaleibench[wandb]' "
            f"(or pip install wandb) ({exc})") from exc
    return wandb


def numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, without ``kind`` and ``t_env``.

    Examples:
        >>> numbers({"kind": "eval", "t_env": 4, "return_mean": -3.5, "returns": [1.0],
        ...          "ok": True})
        {'return_mean': -3.5}
    """
    return {k: float(v) for k, v in row.items()
            if k not in ("kind", "t_env") and not isinstance(v, bool)
            and isinstance(v, int | float) and math.isfinite(v)}


class CsvSink:
    """Writes metrics rows to ``<run>/metrics.csv`` (long form; see the module docstring)."""

    def __init__(self, path: str | Path, replay: Iterable[dict[str, Any]] = ()) -> None:
        self.path = Path(path)
        self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._file)
        self._writer.writerow(CSV_COLUMNS)
        for row in replay:
            self.write(row)

    def write(self, row: dict[str, Any]) -> None:
        """Append one line per number of ``row``."""
        kind, step = str(row.get("kind", "metrics")), int(row.get("t_env", 0))
        for key, value in numbers(row).items():
            self._writer.writerow((kind, step, key, repr(value)))
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class WandbSink:
    """Logs metrics rows to a Weights & Biases run (see the module docstring)."""

    def __init__(self, spec: dict[str, Any], run_dir: str | Path,
                 replay: Iterable[dict[str, Any]] = ()) -> None:
        wandb = require_wandb()
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "kaleibench"), name=str(spec["run_id"]),
            group=f"{spec.get('suite')}/{spec.get('variant')}", job_type=str(spec.get("task")),
            dir=str(run_dir), config=spec,
            tags=[str(spec.get("variant")), str(spec.get("task"))])
        for row in replay:
            self.write(row)

    def write(self, row: dict[str, Any]) -> None:
        """Log the numbers of ``row`` as ``<kind>/<metric>`` at step ``t_env``."""
        kind = str(row.get("kind", "metrics"))
        values = {f"{kind}/{k}": v for k, v in numbers(row).items()}
        if values:
            self.run.log(values, step=int(row.get("t_env", 0)))

    def close(self) -> None:
        """Finish the W&B run."""
        self.run.finish()


class MultiSink:
    """Several sinks behind the one ``MetricsSink`` slot of a run."""

    def __init__(self, sinks: Sequence[Any]) -> None:
        self.sinks = list(sinks)

    def write(self, row: dict[str, Any]) -> None:
        """Give ``row`` to every sink."""
        for sink in self.sinks:
            sink.write(row)

    def close(self) -> None:
        """Close every sink (all of them, even if one fails)."""
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - close the others first
                errors.append(exc)
        if errors:
            raise errors[0]


def open_sinks(names: Sequence[str], spec: dict[str, Any], run_dir: Path,
               existing: Any | None, replay: list[dict[str, Any]]) -> Any | None:
    """The run's metrics sink: ``existing`` (e.g. TensorBoard) plus the named ones."""
    sinks = [existing] if existing is not None else []
    for name in names:
        if name == "csv":
            sinks.append(CsvSink(run_dir / CSV_NAME, replay))
        elif name == "wandb":
            sinks.append(WandbSink(spec, run_dir, replay))
        else:
            raise ValueError(f"unknown metrics sink {name!r}; known: {', '.join(SINKS)}")
    if not sinks:
        return None
    return sinks[0] if len(sinks) == 1 else MultiSink(sinks)
