"""How expensive cells are, and how long a grid has left: ETAs weighted by each cell's speed.

Cells differ a lot in env steps per second (ALMA's allocation policy makes it 6-15x slower than
QMIX; six agents cost QMIX twice what three do), so an ETA that counts every remaining env step
alike is wrong by that factor for most of a grid. Here each cell's remaining steps are divided by
the rate of its (variant, task):

1. the rate measured in this grid (completed cells' ``final.json`` ``steps_per_second``,
   running cells' latest ``env_steps_per_s`` from ``metrics.jsonl`` once they learn), else
2. the measured prior of that variant and task (:data:`PRIORS_FILE`) scaled by how fast this
   machine runs the cells already measured (the median ratio measured / prior), else
3. the same variant's rate measured on other tasks, the median measured rate, or
   :data:`DEFAULT_STEPS_PER_S`.

Derived variants (``qmix+lr=0.001``) share their base variant's prior. The remaining work is
spread over the workers, but a cell is never split: the ETA is at least the longest cell left.
The same priors give each suite's estimated wall time on 2 cores (``kaleibench list``).
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRIORS_FILE = Path(__file__).with_name("cost_priors.json")
"""The measured cost table: env steps per CPU-second of one single-threaded training process
per variant and task, with the CPU, commit and method that produced it. Regenerate with
``python benchmarks/measure_costs.py --out kaleibench/harness/cost_priors.json``."""
REFERENCE_TASK = "mpe/spread-v0"
"""The task whose rate stands for a variant when no task is given."""
DEFAULT_STEPS_PER_S = 1000.0
"""Rate assumed for a variant with no prior, before anything was measured."""


@functools.lru_cache(maxsize=1)
def prior_table() -> dict[str, dict[str, float]]:
    """``{variant: {task id: env steps per CPU-second}}`` from :data:`PRIORS_FILE` ({} if the
    file is missing or unreadable: ETAs then rest on what a grid measures)."""
    try:
        data = json.loads(PRIORS_FILE.read_text())
        rates = data["rates"]
        return {str(v): {str(t): float(r) for t, r in by_task.items()}
                for v, by_task in rates.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def base_name(variant: str) -> str:
    """``qmix+lr=0.001`` -> ``qmix`` (the variant whose prior a derived variant uses)."""
    return variant.split("+", 1)[0]


def prior(variant: str, task: str | None = None) -> float | None:
    """The measured prior rate of ``variant`` (or its base) on ``task``, None if unknown.

    Without a task, or for a task the table lacks, the variant's rate on
    :data:`REFERENCE_TASK` (else the median over its tasks) stands in.
    """
    table = prior_table()
    by_task = table.get(variant) or table.get(base_name(variant))
    if not by_task:
        return None
    if task is not None and task in by_task:
        return by_task[task]
    return by_task.get(REFERENCE_TASK, statistics.median(by_task.values()))


def relative_cost(variant: str, reference: str = "qmix", task: str | None = None
                  ) -> float | None:
    """How many times more CPU time per env step ``variant`` needs than ``reference``.

    Examples:
        >>> relative_cost("qmix")
        1.0
    """
    mine, ref = prior(variant, task), prior(reference, task)
    return None if mine is None or ref is None else ref / mine


Key = tuple[str, str]
"""(variant, task id); the task is "" when unknown."""


@dataclass
class CostModel:
    """Env steps per second per (variant, task): measured in a grid, else scaled priors."""

    measured: dict[Key, list[float]] = field(default_factory=dict)

    def observe(self, variant: str, rate: float, task: str = "") -> None:
        """Record a measured rate (env steps per wall-clock second) of one cell."""
        if rate > 0:
            self.measured.setdefault((variant, task), []).append(float(rate))

    def speed_factor(self) -> float | None:
        """How fast this machine runs the measured cells relative to their priors (median
        ratio), None before anything with a prior was measured."""
        ratios = [statistics.median(r) / p for (v, t), r in self.measured.items()
                  if (p := prior(v, t or None)) is not None]
        return statistics.median(ratios) if ratios else None

    def rate(self, variant: str, task: str = "") -> float:
        """Best estimate of ``variant``'s env steps per second on ``task`` on this machine:
        measured here; else its prior scaled by :meth:`speed_factor`; else the median of the
        same variant's measured tasks; else of everything measured; else the default."""
        if (variant, task) in self.measured:
            return statistics.median(self.measured[(variant, task)])
        own = prior(variant, task or None)
        if own is not None:
            return own * (self.speed_factor() or 1.0)
        same = [statistics.median(r) for (v, _), r in self.measured.items() if v == variant]
        if same:
            return statistics.median(same)
        rates = [statistics.median(r) for r in self.measured.values()]
        return statistics.median(rates) if rates else DEFAULT_STEPS_PER_S

    def is_measured(self, variant: str, task: str = "") -> bool:
        """Whether ``rate(variant, task)`` comes from this grid's own measurements."""
        return (variant, task) in self.measured

    def eta_seconds(self, remaining: Iterable[tuple[str, str, int]], workers: int) -> float:
        """Seconds left for cells given as (variant, task, remaining env steps) on ``workers``.

        The work is spread over the workers, but a cell is never split: the ETA is at least
        the longest cell left.
        """
        times = [steps / self.rate(variant, task) for variant, task, steps in remaining
                 if steps > 0]
        if not times:
            return 0.0
        return max(sum(times) / max(1, workers), max(times))


def suite_estimate(cells: Iterable[tuple[str, str, int]], workers: int = 2) -> float | None:
    """Seconds a grid of (variant, task, env steps) cells needs on ``workers`` idle cores at the
    measured prior rates (CPU time = wall time when each worker has a core of its own); None if
    a learning cell's variant has no prior. Evaluation episodes are not counted.

    Examples:
        >>> steps = int(prior("qmix", "mpe/spread-v0") * 60)  # one CPU-minute of qmix
        >>> round(suite_estimate([("qmix", "mpe/spread-v0", steps)] * 4))  # 4 cells, 2 cores
        120
    """
    cells = [c for c in cells if c[2] > 0]
    if any(prior(v, t) is None for v, t, _ in cells):
        return None
    return CostModel().eta_seconds(cells, workers)


def suite_cells(suite: Any) -> list[tuple[str, str, int]]:
    """The learning cells of a loaded suite as (prior key, task id, env steps): not-applicable
    cells and reference policies dropped. A variant without a prior of its own (a YAML file, a
    plugin) is costed as the first built-in variant of the same algorithm class."""
    from kaleibench.algos import load_variant, variants
    from kaleibench.harness.grid import expand

    by_algo: dict[str, str] = {}
    for name in variants.names():
        try:
            by_algo.setdefault(load_variant(name).algo, name)
        except Exception:  # noqa: BLE001 - a broken plugin must not break the estimate
            continue
    out = []
    for cell in expand(suite):
        variant = cell.spec.variant
        if cell.na_reason is not None or not variant.learns:
            continue
        key = variant.name
        if prior(key) is None:
            key = by_algo.get(variant.algo, key)
        out.append((key, cell.spec.task, cell.spec.t_max))
    return out


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
    """``env_steps_per_s`` of the last ``train`` row of a metrics.jsonl that was logged while
    learning (``n_updates`` > 0); reads only the file's tail.

    The rows before the first update (the replay buffer filling) run 5-10x faster than the
    rest of the cell: taken as the cell's rate, they made the ETA of a grid whose cells had just
    started several times too short. Until a cell has learned for one log interval its rate is
    unknown here and the ETA uses the priors.
    """
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
        if (isinstance(row, dict) and row.get("kind") == "train" and "env_steps_per_s" in row
                and float(row.get("n_updates", 0) or 0) > 0):
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
    task: str = ""


def read_cell(run_dir: Path, variant: str, t_max: int, learns: bool = True, task: str = ""
              ) -> CellProgress:
    """Progress of the cell in ``run_dir`` (a missing folder is ``pending``)."""
    status = _read_json(run_dir / "status.json")
    if not learns:
        t_max = 0
    if status is None:
        return CellProgress(variant, "pending", 0, t_max, task=task)
    state = str(status.get("state"))
    t_env = min(int(status.get("t_env", 0) or 0), t_max)
    rate = None
    if state == "completed":
        final = _read_json(run_dir / "final.json") or {}
        rate = final.get("steps_per_second")
        t_env = t_max
    elif state == "running":
        rate = last_train_rate(run_dir / "metrics.jsonl")
    return CellProgress(variant, state, t_env, t_max, float(rate) if rate else None, task)


def grid_eta(cells: Sequence[CellProgress], workers: int) -> tuple[float, CostModel]:
    """Seconds left for the unfinished ``cells`` of a grid, and the model used."""
    model = CostModel()
    for cell in cells:
        if cell.rate and cell.t_max > 0:
            model.observe(cell.variant, cell.rate, cell.task)
    left = [(c.variant, c.task, c.t_max - c.t_env) for c in cells
            if c.state not in ("completed", "n/a", "failed")]
    return model.eta_seconds(left, workers), model


def _learns(variant: str) -> bool:
    try:
        from kaleibench.algos import load_variant

        return bool(load_variant(base_name(variant)).learns)
    except Exception:  # noqa: BLE001 - an unknown or broken variant: assume it trains
        return True


def _folder_name(entry: str) -> str:
    """The folder name of a suite.json variant entry: a variant file's ``name`` key (its file
    stem when the file cannot be read from here), else the entry itself."""
    if not entry.endswith((".yaml", ".yml")):
        return entry
    try:
        from kaleibench.config import load_yaml

        return str(load_yaml(entry).get("name") or Path(entry).stem)
    except Exception:  # noqa: BLE001 - a path relative to another folder: the stem is the name
        return Path(entry).stem


def folder_cells(root: Path) -> list[tuple[str, Path, CellProgress]]:
    """Every cell of a results folder: the grid of its ``suite.json`` plus run folders on disk,
    as (``variant/task/seed_k``, run folder, progress)."""
    from kaleibench.train.spec import task_slug

    suite = _read_json(root / "suite.json") or {}
    t_max_default = int(suite.get("t_max", 0) or 0)
    keys: dict[str, tuple[str, int]] = {}
    for entry in suite.get("variants", []) or []:
        variant = _folder_name(str(entry))
        for task in suite.get("tasks", []) or []:
            for seed in suite.get("seeds", []) or []:
                keys[f"{variant}/{task_slug(str(task.get('id')))}/seed_{seed}"] = (
                    variant, t_max_default)
    for status in sorted(root.glob("*/*/seed_*/status.json")):
        key = str(status.parent.relative_to(root))
        spec = _read_json(status.parent / "spec.json") or {}
        keys[key] = (key.split("/", 1)[0], int(spec.get("t_max", t_max_default) or 0))
    learns: dict[str, bool] = {}
    out = []
    for key, (variant, t_max) in sorted(keys.items()):
        if variant not in learns:
            learns[variant] = _learns(variant)
        task = key.split("/")[1].replace("__", "/")  # the folder name of a task id, reversed
        out.append((key, root / key, read_cell(root / key, variant, t_max, learns[variant],
                                               task)))
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
            f"{v} on {t} {model.rate(v, t):.0f}/s"
            f"{'' if model.is_measured(v, t) else ' (est.)'}"
            for v, t in sorted({(c.variant, c.task) for c in left}))
        lines.append(f"ETA {format_eta(eta)} with {workers} worker(s) at env steps/s: {rates}")
    return lines
