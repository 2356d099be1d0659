"""Load a results folder into score matrices, normalise them and check completeness.

Layout read here (written by the harness): ``<results_dir>/suite.json`` and
``<results_dir>/<variant>/<task_slug>/seed_<k>/{spec,status,final}.json`` plus
``metrics.jsonl``, where ``task_slug`` is the task id with ``/`` replaced by ``__``.

Scores follow rliable's contract: ``{variant: ndarray (n_seeds, n_tasks)}``. Normalisation uses
the suite's *fixed* per-task bounds, ``(x - random) / (reference - random)``, so adding a variant
never changes another variant's normalised score. Before any comparison the completeness check
names every missing cell (marl-eval's ``diagnose_data_errors`` idea); failed runs are listed,
never silently dropped. Cells whose status is ``"n/a"`` (a variant that cannot run on a task)
are reported as N/A and are not counted as missing.

A run whose files cannot be trusted (a status.json or final.json that is not a JSON object,
a final.json without its scores, or a file that fails the checksum recorded when the run
completed) gets the state ``"corrupt"`` with an error naming the file: it is never scored,
and it counts as missing, so a report refuses the grid unless told to allow incomplete ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kaleibench.analysis._io import read_json

SCORE_KEYS = {
    "final": "final_return",
    "absolute": "absolute_return",
    "final_per_agent": "final_return_per_agent",
    "absolute_per_agent": "absolute_return_per_agent",
}
"""Score kinds accepted by :func:`score_matrices`, mapped to their key in ``final.json``."""

PER_AGENT_KINDS = frozenset({"final_per_agent", "absolute_per_agent"})
"""Score kinds that are the team return divided by the number of controlled agents."""


def task_slug(task_id: str) -> str:
    """Folder name of a task id.

    Examples:
        >>> task_slug("mpe/spread-v0")
        'mpe__spread-v0'
    """
    return task_id.replace("/", "__")


@dataclass(frozen=True)
class TaskInfo:
    """One task of a suite with its fixed normalisation bounds (``None`` when not declared)."""

    id: str
    random: float | None = None
    reference: float | None = None

    @property
    def has_bounds(self) -> bool:
        """Whether both bounds are known and distinct."""
        return (
            self.random is not None
            and self.reference is not None
            and not math.isclose(self.random, self.reference)
        )


@dataclass(frozen=True)
class SuiteInfo:
    """The grid a results folder is supposed to contain (``suite.json``)."""

    name: str
    tasks: tuple[TaskInfo, ...]
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    version: int = 0
    hash: str = ""
    t_max: int = 0
    eval_interval: int = 0
    eval_episodes: int = 0
    compare: tuple[str, str] | None = None
    """The declared comparison ``(a, b)`` of a comparison suite (``suite.json`` ``compare``)."""

    @property
    def task_ids(self) -> list[str]:
        """Task ids in suite order."""
        return [t.id for t in self.tasks]

    @property
    def has_bounds(self) -> bool:
        """Whether every task declares usable normalisation bounds."""
        return all(t.has_bounds for t in self.tasks)

    def task(self, task_id: str) -> TaskInfo:
        """The :class:`TaskInfo` of ``task_id``."""
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(f"task {task_id!r} is not in suite {self.name!r}")


@dataclass(frozen=True)
class Run:
    """One run directory: its state and, when completed, its ``final.json``."""

    variant: str
    task: str
    seed: int
    path: Path
    state: str
    final: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Results:
    """All runs found under a results folder, keyed by ``(variant, task, seed)``."""

    root: Path
    suite: SuiteInfo
    runs: dict[tuple[str, str, int], Run] = field(default_factory=dict)

    def cell(self, variant: str, task: str) -> list[Run]:
        """Runs of one (variant, task) cell, in suite seed order (absent seeds skipped)."""
        found = (self.runs.get((variant, task, s)) for s in self.suite.seeds)
        return [r for r in found if r is not None]

    def is_na(self, variant: str, task: str) -> bool:
        """Whether the cell is marked not-applicable (every present run has state ``n/a``)."""
        runs = self.cell(variant, task)
        return bool(runs) and all(r.state == "n/a" for r in runs)


def _suite_from_json(obj: dict[str, Any]) -> SuiteInfo:
    compare = obj.get("compare")
    tasks = []
    for t in obj["tasks"]:
        bounds = t.get("bounds") or {}
        tasks.append(TaskInfo(t["id"], bounds.get("random"), bounds.get("reference")))
    return SuiteInfo(
        name=str(obj["name"]),
        tasks=tuple(tasks),
        variants=tuple(obj["variants"]),
        seeds=tuple(int(s) for s in obj["seeds"]),
        version=int(obj.get("version", 0)),
        hash=str(obj.get("hash", "")),
        t_max=int(obj.get("t_max", 0)),
        eval_interval=int(obj.get("eval_interval", 0)),
        eval_episodes=int(obj.get("eval_episodes", 0)),
        compare=(str(compare["a"]), str(compare["b"])) if isinstance(compare, dict) else None,
    )


def _infer_suite(root: Path) -> SuiteInfo:
    """Describe the grid from the folders alone (no ``suite.json``; no bounds)."""
    runs = sorted(root.glob("*/*/seed_*"))
    variants = sorted({p.parts[-3] for p in runs})
    tasks = sorted({p.parts[-2].replace("__", "/") for p in runs})
    seeds = sorted({int(p.name.removeprefix("seed_")) for p in runs})
    return SuiteInfo(root.name, tuple(TaskInfo(t) for t in tasks), tuple(variants), tuple(seeds))


def _optional_json(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.exists() else None


def _load_run(path: Path, variant: str, task: str, seed: int) -> Run:
    """One run folder; any malformed file makes it ``corrupt`` (named), never an exception."""
    from kaleibench.harness.integrity import verify_kept_files

    try:
        spec = _optional_json(path / "spec.json")
    except (OSError, ValueError):
        spec = None  # provenance only: scores do not need it
    try:
        status = _optional_json(path / "status.json") or {}
        final = _optional_json(path / "final.json")
        state = str(status.get("state", "pending"))
        if state == "completed":
            verify_kept_files(path, status)
            missing = [k for k in ("final_return", "absolute_return") if final is not None
                       and not isinstance(final.get(k), int | float)]
            if missing:
                raise ValueError(f"{path / 'final.json'}: missing or non-numeric {missing}")
    except (OSError, ValueError) as exc:  # CorruptFileError is a ValueError
        return Run(variant, task, seed, path, "corrupt", None, spec, str(exc))
    if state == "completed" and final is None:
        state = "failed"
        status = {**status, "error": "status says completed but final.json is missing"}
    return Run(variant, task, seed, path, state, final, spec, status.get("error"))


def load_results(results_dir: str | Path) -> Results:
    """Read every run of a results folder.

    Args:
        results_dir: One suite's folder, e.g. ``results/runs/smoke``.

    Returns:
        A :class:`Results`; the grid comes from ``suite.json`` (inferred from the folders, with
        no bounds, if that file is absent). Variant folders on disk that ``suite.json`` does not
        list (e.g. a new variant run into an existing suite folder) are appended to the grid.

    Raises:
        FileNotFoundError: If ``results_dir`` does not exist.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist")
    suite_file = root / "suite.json"
    if suite_file.exists():
        try:
            suite = _suite_from_json(read_json(suite_file))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{suite_file}: not a usable suite description ({exc!r})") from exc
    else:
        suite = _infer_suite(root)
    on_disk = sorted({p.parts[-3] for p in root.glob("*/*/seed_*") if p.is_dir()})
    extra = tuple(v for v in on_disk if v not in suite.variants)
    if extra:
        suite = replace(suite, variants=suite.variants + extra)
    runs: dict[tuple[str, str, int], Run] = {}
    for variant in suite.variants:
        for task in suite.task_ids:
            for seed in suite.seeds:
                path = root / variant / task_slug(task) / f"seed_{seed}"
                if path.is_dir():
                    runs[(variant, task, seed)] = _load_run(path, variant, task, seed)
    return Results(root, suite, runs)


@dataclass(frozen=True)
class MissingCell:
    """A (variant, task, seed) without a usable score, and why."""

    variant: str
    task: str
    seed: int
    state: str
    error: str | None = None

    def __str__(self) -> str:
        why = f"{self.state}: {self.error}" if self.error else self.state
        return f"{self.variant} / {self.task} / seed {self.seed} ({why})"


@dataclass(frozen=True)
class Completeness:
    """Result of :func:`check_completeness`."""

    missing: tuple[MissingCell, ...]
    not_applicable: tuple[tuple[str, str], ...]

    @property
    def complete(self) -> bool:
        """True when every applicable (variant, task, seed) has a final score."""
        return not self.missing

    def describe(self) -> str:
        """Human-readable list of the missing cells (empty string when complete)."""
        if self.complete:
            return ""
        lines = [f"{len(self.missing)} missing run(s):"]
        lines += [f"  - {m}" for m in self.missing]
        return "\n".join(lines)


class IncompleteResultsError(ValueError):
    """Raised when a comparison is asked of an incomplete grid without ``allow_incomplete``."""


def check_completeness(results: Results) -> Completeness:
    """Name every cell of the suite grid that lacks a final score.

    A run counts when its state is ``completed`` and it has a ``final.json``; ``n/a`` cells are
    listed separately and are not missing.
    """
    missing: list[MissingCell] = []
    na: list[tuple[str, str]] = []
    for variant in results.suite.variants:
        for task in results.suite.task_ids:
            if results.is_na(variant, task):
                na.append((variant, task))
                continue
            for seed in results.suite.seeds:
                run = results.runs.get((variant, task, seed))
                if run is None:
                    missing.append(MissingCell(variant, task, seed, "absent"))
                elif run.state != "completed":
                    missing.append(MissingCell(variant, task, seed, run.state, run.error))
    return Completeness(tuple(missing), tuple(na))


INCOMPLETE_REMEDY = "finish the runs or pass allow_incomplete=True (--allow-incomplete)"
"""What a comparison of an incomplete grid tells the user to do."""


def require_complete(
    results: Results, allow_incomplete: bool = False, remedy: str = INCOMPLETE_REMEDY
) -> Completeness:
    """Run :func:`check_completeness` and raise unless complete or explicitly allowed.

    ``remedy`` ends the error; a caller that has no ``--allow-incomplete`` passes its own.

    Raises:
        IncompleteResultsError: With the list of missing cells, when the grid is incomplete
            and ``allow_incomplete`` is False.
    """
    report = check_completeness(results)
    if not report.complete and not allow_incomplete:
        raise IncompleteResultsError(
            f"{report.describe()}\nRefusing to compare an incomplete grid; {remedy}."
        )
    return report


def normalise(x: np.ndarray | float, task: TaskInfo) -> np.ndarray:
    """Map returns to ``(x - random) / (reference - random)`` with the task's fixed bounds.

    Examples:
        >>> float(normalise(5.0, TaskInfo("t", random=0.0, reference=10.0)))
        0.5
    """
    low, high = task.random, task.reference
    if low is None or high is None or math.isclose(low, high):
        raise ValueError(f"task {task.id!r} has no usable normalisation bounds")
    return (np.asarray(x, dtype=float) - low) / (high - low)


def _normalised_value(run: Run, kind: str, task: TaskInfo) -> float:
    """One run's score of ``kind``, normalised with bounds in the same unit as the score.

    The suite's bounds are team returns; a per-agent score is the team return divided by the
    run's number of agents ``N``, so it is normalised with the bounds divided by ``N`` (which
    gives the same normalised value as the team return).
    """
    assert run.final is not None
    value = float(run.final[SCORE_KEYS[kind]])
    if kind not in PER_AGENT_KINDS:
        return float(normalise(value, task))
    n_agents = run.final.get("n_agents")
    if not isinstance(n_agents, int | float) or n_agents <= 0:
        raise ValueError(
            f"cannot normalise {kind!r} of {run.variant} / {run.task} / seed {run.seed}: "
            "final.json has no positive n_agents to scale the team bounds by"
        )
    if task.random is None or task.reference is None or not task.has_bounds:
        return float(normalise(value, task))  # raises the usual "no usable bounds" error
    per_agent = TaskInfo(task.id, task.random / n_agents, task.reference / n_agents)
    return float(normalise(value, per_agent))


def cell_scores(
    results: Results, variant: str, task: str, kind: str = "final", normalised: bool = False
) -> np.ndarray:
    """Per-seed scores of one cell, shape ``(n_completed_seeds,)``, in suite seed order.

    With ``normalised=True`` per-agent kinds use per-agent bounds (see :func:`score_matrices`).
    """
    if kind not in SCORE_KEYS:
        raise ValueError(f"unknown score kind {kind!r}; choose one of {sorted(SCORE_KEYS)}")
    runs = [r for r in results.cell(variant, task) if r.state == "completed" and r.final]
    if normalised:
        info = results.suite.task(task)
        return np.asarray([_normalised_value(r, kind, info) for r in runs], dtype=float)
    return np.asarray([float(r.final[SCORE_KEYS[kind]]) for r in runs if r.final], dtype=float)


def score_matrices(
    results: Results,
    kind: str = "final",
    normalised: bool = True,
    variants: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Scores per variant as ``{variant: ndarray (n_seeds, n_tasks)}`` with NaN gaps.

    Rows follow the suite's seeds and columns its tasks; missing runs and N/A cells are NaN.
    Use :func:`aggregate_view` to get the NaN-free matrices that the bootstrap needs.

    With ``normalised=True``, per-agent kinds (:data:`PER_AGENT_KINDS`) are normalised with the
    suite's team bounds divided by each run's ``n_agents``, so their normalised scores equal the
    team return's; a run without ``n_agents`` raises ``ValueError``.
    """
    if kind not in SCORE_KEYS:
        raise ValueError(f"unknown score kind {kind!r}; choose one of {sorted(SCORE_KEYS)}")
    suite = results.suite
    out: dict[str, np.ndarray] = {}
    for variant in variants or list(suite.variants):
        mat = np.full((len(suite.seeds), len(suite.tasks)), np.nan)
        for j, task in enumerate(suite.task_ids):
            for i, seed in enumerate(suite.seeds):
                run = results.runs.get((variant, task, seed))
                if run is None or run.state != "completed" or run.final is None:
                    continue
                if normalised:
                    mat[i, j] = _normalised_value(run, kind, suite.tasks[j])
                else:
                    mat[i, j] = float(run.final[SCORE_KEYS[kind]])
        out[variant] = mat
    return out


def aggregate_view(
    matrices: dict[str, np.ndarray], task_ids: list[str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Restrict score matrices to what an across-task aggregate may use.

    Statistical choice: aggregates compare variants on the same tasks, so a task is kept only
    if no variant has it entirely missing (N/A); then, per variant, seeds lacking any kept task
    are dropped (only possible with ``allow_incomplete``), so each matrix is rectangular.

    Returns:
        ``({variant: ndarray (n_seeds_v, n_kept_tasks)}, kept_task_ids)``.
    """
    keep = [
        j
        for j in range(len(task_ids))
        if all(np.isfinite(m[:, j]).any() for m in matrices.values())
    ]
    clean = {}
    for variant, mat in matrices.items():
        sub = mat[:, keep]
        clean[variant] = sub[np.isfinite(sub).all(axis=1)]
    return clean, [task_ids[j] for j in keep]
