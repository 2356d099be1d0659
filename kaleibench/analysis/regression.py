"""Reference scores and the regression check behind ``kaleibench check``.

A reference (``results/reference/<suite>.json``) stores, per (variant, task), the per-seed
``final_return`` of a completed suite run, with provenance: suite name/version/hash, each cell's
config hash, package versions, platform, Python version, git sha and the producing command.

Rule used by :func:`check_against_reference` (every finding it returns is a failure):

1. **Missing.** A cell that is completed in the reference but has fewer completed seeds in the
   new results (absent, failed, running, or newly N/A) fails as ``missing``.
2. **Exact mode** applies to a cell when the new runs' platform, Python version and package
   versions equal the reference's, the suite hash is the same and each seed's config hash
   (which covers variant config, task spec, seed and budget) is unchanged. Runs are then
   deterministic, so scores must be equal per seed (up to a relative ``1e-9``). A lower mean
   beyond that fails as ``regressed``; any other difference fails as ``changed`` (a behaviour
   change: regenerate the reference on purpose).
3. **Statistical mode** applies otherwise (different machine, versions or config). A cell fails
   as ``regressed`` when *both* a one-sided Welch t-test of ``new < reference`` gives
   ``p < alpha`` (default 0.01) *and* the mean drop exceeds a declared tolerance: ``tol_frac``
   (default 10%) of the task's ``reference - random`` bound gap when the suite declares bounds,
   else of ``|reference mean|``. With fewer than two seeds on a side, or zero variance on
   both, the test is replaced by the drop condition alone (documented limitation: two seeds
   give Welch at most ~2 degrees of freedom, so only large, consistent drops are flagged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kaleibench.analysis._io import atomic_write_json, read_json
from kaleibench.analysis.scores import Results, load_results
from kaleibench.analysis.significance import welch_test

REFERENCE_SCHEMA = 1
EXACT_RTOL = 1e-9
PROVENANCE_FIELDS = ("platform", "python", "versions")


def _unique(values: list[Any], what: str) -> Any:
    distinct = {repr(v): v for v in values}
    if len(distinct) > 1:
        raise ValueError(f"runs disagree on {what}: {sorted(distinct)}; a reference must come "
                         "from one environment")  # fmt: skip
    return next(iter(distinct.values()), None)


def _provenance(results: Results) -> dict[str, Any]:
    specs = [r.spec for r in results.runs.values() if r.spec and r.state == "completed"]
    prov = {f: _unique([s.get(f) for s in specs], f) for f in PROVENANCE_FIELDS}
    prov["git_sha"] = sorted({str(s.get("git_sha")) for s in specs})  # informative only
    return prov


def _cell_entry(results: Results, variant: str, task: str) -> dict[str, Any]:
    if results.is_na(variant, task):
        return {"state": "n/a"}
    runs = [r for r in results.cell(variant, task) if r.state == "completed" and r.final]
    return {
        "state": "completed",
        "seeds": [r.seed for r in runs],
        "scores": [float(r.final["final_return"]) for r in runs if r.final],
        "config_hashes": [str((r.spec or {}).get("config_hash")) for r in runs],
    }


def build_reference(
    results_dir: str | Path,
    suite_name: str | None = None,
    suite_hash: str | None = None,
    command: str = "",
    allow_incomplete: bool = False,
) -> dict[str, Any]:
    """Reference dict (per-seed ``final_return`` per cell, with provenance) of a results folder.

    Args:
        results_dir: Completed suite results.
        suite_name: Suite name to record (default: from ``suite.json``).
        suite_hash: Suite hash to record (default: from ``suite.json``).
        command: The command line that regenerates this reference.
        allow_incomplete: Build from an incomplete grid (missing cells are left out).

    Raises:
        IncompleteResultsError: If the grid is incomplete and ``allow_incomplete`` is False.
        ValueError: If runs come from different platforms/versions or a cell mixes configs.
    """
    from kaleibench.analysis.scores import require_complete

    results = load_results(results_dir)
    require_complete(results, allow_incomplete)
    suite = results.suite
    cells: dict[str, dict[str, Any]] = {}
    for v in suite.variants:
        cells[v] = {t: _cell_entry(results, v, t) for t in suite.task_ids}
    return {
        "schema": REFERENCE_SCHEMA,
        "suite": {
            "name": suite_name or suite.name,
            "hash": suite_hash or suite.hash,
            "version": suite.version,
        },  # fmt: skip
        "command": command,
        "score": "final_return",
        "provenance": _provenance(results),
        "bounds": {t.id: {"random": t.random, "reference": t.reference} for t in suite.tasks},
        "cells": cells,
    }


def save_reference(reference: dict[str, Any], path: str | Path) -> Path:
    """Write a reference dict as sorted, indented JSON, atomically."""
    atomic_write_json(Path(path), reference)
    return Path(path)


def load_reference(path: str | Path) -> dict[str, Any]:
    """Read a reference JSON and check its schema version."""
    ref = read_json(Path(path))
    if ref.get("schema") != REFERENCE_SCHEMA:
        raise ValueError(
            f"{path}: reference schema {ref.get('schema')!r} is not {REFERENCE_SCHEMA}; "
            "regenerate it with the command it records"
        )
    return ref


@dataclass(frozen=True)
class Regression:
    """A failed cell of the check: ``kind`` is ``missing``, ``changed`` or ``regressed``."""

    variant: str
    task: str
    kind: str
    mode: str
    reference_scores: tuple[float, ...]
    new_scores: tuple[float, ...]
    detail: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        ref, new = np.mean(self.reference_scores), np.mean(self.new_scores or [math.nan])
        return (f"{self.kind.upper()} {self.variant} / {self.task} [{self.mode}]: mean "
                f"{ref:.4f} (n={len(self.reference_scores)}) -> {new:.4f} "
                f"(n={len(self.new_scores)}); {self.detail}")  # fmt: skip


def _environment_matches(results: Results, reference: dict[str, Any]) -> bool:
    """Same suite hash, platform, Python and package versions as the reference."""
    try:
        prov = _provenance(results)
    except ValueError:
        return False
    same = all(prov.get(f) == reference["provenance"].get(f) for f in PROVENANCE_FIELDS)
    return same and results.suite.hash == reference["suite"]["hash"]


def _new_cell(results: Results, variant: str, task: str) -> tuple[dict[int, float], dict[int, str]]:
    """Completed seeds -> final_return of a new cell, and seed -> config hash."""
    runs = [r for r in results.cell(variant, task) if r.state == "completed" and r.final]
    scores = {r.seed: float(r.final["final_return"]) for r in runs if r.final}
    hashes = {r.seed: str((r.spec or {}).get("config_hash")) for r in runs}
    return scores, hashes


def _tolerance(reference: dict[str, Any], task: str, ref_mean: float, tol_frac: float) -> float:
    bounds = reference.get("bounds", {}).get(task) or {}
    low, high = bounds.get("random"), bounds.get("reference")
    if low is not None and high is not None and not math.isclose(low, high):
        return tol_frac * abs(high - low)
    return tol_frac * max(abs(ref_mean), 1e-12)


def _check_exact(variant: str, task: str, ref: np.ndarray, new: np.ndarray) -> Regression | None:
    """Per-seed equality; a lower mean is ``regressed``, any other difference ``changed``."""
    close = np.isclose(new, ref, rtol=EXACT_RTOL, atol=1e-12)
    if close.all():
        return None
    drop = float(ref.mean() - new.mean())
    kind = "regressed" if drop > EXACT_RTOL * max(abs(float(ref.mean())), 1.0) else "changed"
    detail = (f"{int((~close).sum())} of {close.size} seed(s) differ although platform, "
              "versions and config match (runs are deterministic)")  # fmt: skip
    return Regression(variant, task, kind, "exact", tuple(ref), tuple(new), detail,
                      {"drop": drop})  # fmt: skip


def _check_statistical(
    variant: str, task: str, ref: np.ndarray, new: np.ndarray, tolerance: float, alpha: float
) -> Regression | None:
    """One-sided Welch ``new < ref`` with p < alpha AND mean drop > tolerance."""
    drop = float(ref.mean() - new.mean())
    degenerate = min(ref.size, new.size) < 2 or (ref.std() == 0 and new.std() == 0)
    p = math.nan if degenerate else welch_test(new, ref, alternative="less")[1]
    significant = degenerate or p < alpha
    if not (significant and drop > tolerance):
        return None
    test = "drop rule only (n < 2 or zero variance)" if degenerate else f"Welch p={p:.2g}"
    detail = f"drop {drop:.4f} > tolerance {tolerance:.4f}; {test} < alpha {alpha}"
    extra = {"drop": drop, "tolerance": tolerance, "p": p}
    return Regression(variant, task, "regressed", "statistical", tuple(ref), tuple(new), detail,
                      extra)  # fmt: skip


def check_against_reference(
    results_dir: str | Path,
    reference: dict[str, Any],
    alpha: float = 0.01,
    tol_frac: float = 0.10,
) -> list[Regression]:
    """Compare a results folder with a reference; return every failing cell (empty = pass).

    See the module docstring for the rule. Cells only in the new results are ignored.

    Args:
        results_dir: New suite results.
        reference: Dict from :func:`build_reference` / :func:`load_reference`.
        alpha: Significance level of the one-sided Welch test (statistical mode).
        tol_frac: Declared tolerance as a fraction of the bound gap (or of ``|ref mean|``).

    Returns:
        One :class:`Regression` per failing (variant, task), in reference order.
    """
    results = load_results(results_dir)
    same_env = _environment_matches(results, reference)
    found: list[Regression] = []
    for variant, tasks in reference["cells"].items():
        for task, entry in tasks.items():
            if entry.get("state") == "completed":
                hit = _check_cell(results, reference, variant, task, same_env, alpha, tol_frac)
                found += [hit] if hit is not None else []
    return found


def _check_cell(
    results: Results,
    reference: dict[str, Any],
    variant: str,
    task: str,
    same_env: bool,
    alpha: float,
    tol_frac: float,
) -> Regression | None:
    entry = reference["cells"][variant][task]
    ref_by_seed = dict(zip(entry["seeds"], entry["scores"], strict=True))
    new_by_seed, hashes = _new_cell(results, variant, task)
    ref = np.asarray(list(ref_by_seed.values()), dtype=float)
    lacking = sorted(set(ref_by_seed) - set(new_by_seed))
    if lacking:
        detail = f"no completed run for seed(s) {lacking}"
        present = tuple(new_by_seed.values())
        return Regression(variant, task, "missing", "-", tuple(ref), present, detail)
    new = np.asarray([new_by_seed[s] for s in ref_by_seed], dtype=float)
    ref_hashes = dict(zip(entry["seeds"], entry["config_hashes"], strict=True))
    if same_env and all(hashes[seed] == h for seed, h in ref_hashes.items()):
        return _check_exact(variant, task, ref, new)
    tol = _tolerance(reference, task, float(ref.mean()), tol_frac)
    return _check_statistical(variant, task, ref, new, tol, alpha)


def format_regressions(regressions: list[Regression]) -> str:
    """One line per failing cell, or a pass message."""
    if not regressions:
        return "check passed: no regressed, changed or missing cells"
    lines = [f"check FAILED: {len(regressions)} cell(s)"]
    lines += [f"  {r}" for r in regressions]
    return "\n".join(lines)
