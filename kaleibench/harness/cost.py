"""How expensive cells are, and how long a grid has left: ETAs weighted by each variant's speed.

Variants differ a lot in env steps per second (ALMA's allocation policy makes it ~15x slower
than QMIX), so an ETA that counts every remaining env step alike is wrong by that factor for
most of a grid. Here each cell's remaining steps are divided by its variant's rate:

1. the rate measured in this grid (completed cells' ``final.json`` ``steps_per_second``,
   running cells' latest ``env_steps_per_s`` from ``metrics.jsonl``), else
2. the variant's prior rate (:data:`PRIOR_STEPS_PER_S`) scaled by how fast this machine runs the
   variants already measured (the median ratio measured / prior), else
3. the median measured rate, or :data:`DEFAULT_STEPS_PER_S`.

Derived variants (``qmix+lr=0.001``) share their base variant's prior. The remaining work is
spread over the workers, but a cell is never split: the ETA is at least the longest cell left.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRIOR_STEPS_PER_S: dict[str, float] = {
    "qmix": 1360.0,
    "qmix-lambda": 1360.0,
    "qmix-1r3": 890.0,
    "kalei-qmix": 890.0,
    "alma-alloc": 88.0,
    "alma-mine": 81.0,
}
"""Env steps per CPU-second of one training process (one core, ``mpe/spread-v0``, numpy backend,
after start-up), measured as the difference between two budgets of the same run. Only the
ratios matter for an ETA: the machine's own speed is learned as the grid runs."""
DEFAULT_STEPS_PER_S = 1000.0
"""Rate assumed for a variant with no prior, before anything was measured."""


def base_name(variant: str) -> str:
    """``qmix+lr=0.001`` -> ``qmix`` (the variant whose prior a derived variant uses)."""
    return variant.split("+", 1)[0]


def prior(variant: str) -> float | None:
    """The prior rate of ``variant`` (or its base), None if unknown."""
    return PRIOR_STEPS_PER_S.get(variant, PRIOR_STEPS_PER_S.get(base_name(variant)))


def relative_cost(variant: str, reference: str = "qmix") -> float | None:
    """How many times more time per env step ``variant`` needs than ``reference``.

    Examples:
        >>> round(relative_cost("alma-alloc"), 1)
        15.5
    """
    mine, ref = prior(variant), prior(reference)
    return None if mine is None or ref is None else ref / mine


@dataclass
class CostModel:
    """Per-variant env-steps/s: measured in a grid, falling back to scaled priors."""

    measured: dict[str, list[float]] = field(default_factory=dict)

    def observe(self, variant: str, rate: float) -> None:
        """Record a measured rate (env steps per wall-clock second) of one cell."""
        if rate > 0:
            self.measured.setdefault(variant, []).append(float(rate))

    def rate(self, variant: str) -> float:
        """Best estimate of ``variant``'s env steps per second on this machine."""
        if variant in self.measured:
            return statistics.median(self.measured[variant])
        own = prior(variant)
        ratios = [statistics.median(r) / p for v, r in self.measured.items()
                  if (p := prior(v)) is not None]
        if own is not None:
            return own * (statistics.median(ratios) if ratios else 1.0)
        rates = [statistics.median(r) for r in self.measured.values()]
        return statistics.median(rates) if rates else DEFAULT_STEPS_PER_S

    def eta_seconds(self, remaining: Iterable[tuple[str, int]], workers: int) -> float:
        """Seconds left for cells given as (variant, remaining env steps) on ``workers``."""
        times = [steps / self.rate(variant) for variant, steps in remaining if steps > 0]
        if not times:
            return 0.0
        return max(sum(times) / max(1, workers), max(times))


def format_eta(seconds: float) -> str:
    """``3725`` -> ``1:02:05``; ``90000`` -> ``1 d 1:00:00``.

    Examples:
        >>> format_eta(3725), format_eta(59.4)
        ('1:02:05', '0:00:59')
    """
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days} d {clock}" if days else clock


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def last_train_rate(metrics: Path, tail_bytes: int = 8192) -> float | None:
    """``env_steps_per_s`` of the last ``train`` row of a metrics.jsonl (reads only its tail)."""
    try:
        with open(metrics, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - tail_bytes))
            lines = fh.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("kind") == "train" and "env_steps_per_s" in row:
            return float(row["env_steps_per_s"])
    return None


@dataclass
class CellProgress:
    """What one run folder says about its progress."""

    variant: str
    state: str  # completed | running | other states | pending (no folder)
    t_env: int
    t_max: int
    rate: float | None = None


def read_cell(run_dir: Path, variant: str, t_max: int, learns: bool = True) -> CellProgress:
    """Progress of the cell in ``run_dir`` (a missing folder is ``pending``)."""
    status = _read_json(run_dir / "status.json")
    if not learns:
        t_max = 0
    if status is None:
        return CellProgress(variant, "pending", 0, t_max)
    state = str(status.get("state"))
    t_env = min(int(status.get("t_env", 0) or 0), t_max)
    rate = None
    if state == "completed":
        final = _read_json(run_dir / "final.json") or {}
        rate = final.get("steps_per_second")
        t_env = t_max
    elif state == "running":
        rate = last_train_rate(run_dir / "metrics.jsonl")
    return CellProgress(variant, state, t_env, t_max, float(rate) if rate else None)


def grid_eta(cells: Sequence[CellProgress], workers: int) -> tuple[float, CostModel]:
    """Seconds left for the unfinished ``cells`` of a grid, and the model used."""
    model = CostModel()
    for cell in cells:
        if cell.rate and cell.t_max > 0:
            model.observe(cell.variant, cell.rate)
    left = [(c.variant, c.t_max - c.t_env) for c in cells
            if c.state not in ("completed", "n/a", "failed")]
    return model.eta_seconds(left, workers), model


def _learns(variant: str) -> bool:
    try:
        from kaleibench.algos import load_variant

        return bool(load_variant(base_name(variant)).learns)
    except Exception:  # noqa: BLE001 - an unknown or broken variant: assume it trains
        return True


def folder_cells(root: Path) -> list[tuple[str, Path, CellProgress]]:
    """Every cell of a results folder: the grid of its ``suite.json`` plus run folders on disk,
    as (``variant/task/seed_k``, run folder, progress)."""
    from kaleibench.train.spec import task_slug

    suite = _read_json(root / "suite.json") or {}
    t_max_default = int(suite.get("t_max", 0) or 0)
    keys: dict[str, tuple[str, int]] = {}
    for variant in suite.get("variants", []) or []:
        for task in suite.get("tasks", []) or []:
            for seed in suite.get("seeds", []) or []:
                keys[f"{variant}/{task_slug(str(task.get('id')))}/seed_{seed}"] = (
                    str(variant), t_max_default)
    for status in sorted(root.glob("*/*/seed_*/status.json")):
        key = str(status.parent.relative_to(root))
        spec = _read_json(status.parent / "spec.json") or {}
        keys[key] = (key.split("/", 1)[0], int(spec.get("t_max", t_max_default) or 0))
    learns: dict[str, bool] = {}
    out = []
    for key, (variant, t_max) in sorted(keys.items()):
        if variant not in learns:
            learns[variant] = _learns(variant)
        out.append((key, root / key, read_cell(root / key, variant, t_max, learns[variant])))
    return out


def status_summary(root: Path, max_pending: int = 20) -> list[str]:
    """Lines for ``kaleibench status``: pending cells, counts per state and a weighted ETA."""
    from collections import Counter

    cells = folder_cells(root)
    if not cells:
        return []
    lines = [f"pending     {key}" for key, _, c in cells if c.state == "pending"]
    if len(lines) > max_pending:
        lines = lines[:max_pending] + [f"            ... and {len(lines) - max_pending} more "
                                       "pending cells"]
    counts = Counter(c.state for _, _, c in cells)
    lines.append(f"{len(cells)} cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    progress = [c for _, _, c in cells]
    workers = max(1, counts.get("running", 0))
    eta, model = grid_eta(progress, workers)
    left = [c for c in progress if c.state not in ("completed", "n/a", "failed")]
    if left:
        rates = ", ".join(
            f"{v} {model.rate(v):.0f}/s{'' if v in model.measured else ' (est.)'}"
            for v in sorted({c.variant for c in left}))
        lines.append(f"ETA {format_eta(eta)} with {workers} worker(s) at env steps/s: {rates}")
    return lines
