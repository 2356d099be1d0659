"""Reference scores and the regression check behind ``kaleibench check``.

A reference (``results/reference/<suite>.json``) stores, per (variant, task), the per-seed
``final_return`` of a completed suite run, with provenance: suite name/version/hash, each cell's
config hash, package versions, platform, the numerics fingerprint (see
:mod:`kaleibench.utils.fingerprint`), git sha, the producing command, and the gate's rule.

Every reference cell gets one verdict (:class:`CellVerdict`):

* ``missing`` (fails): a reference seed has no completed new run.
* **Exact mode** applies when the new runs and the reference share the numerics fingerprint,
  package versions, suite hash and every seed's config hash: runs are then deterministic.
  ``identical`` (passes) if every seed's score is equal up to a relative 1e-9, else ``changed``
  (fails: the code's numbers changed on the same machine; regenerate the reference on purpose).
  A ``changed`` cell also carries the statistical rule's finding, so a rounding change is not
  mistaken for a learning regression.
* **Statistical mode** applies otherwise (another CPU, other versions or configs), with the rule
  of :mod:`kaleibench.analysis.gate`: ``collapsed`` (fails: a non-finite score, or a seed far
  below every reference seed), ``regressed`` (fails: the one-sided margin test rejects after Holm
  across the suite's cells), ``inconclusive`` (passes, said loudly: the test did not reject and
  the seed counts cannot detect the drop the gate is meant to catch; the minimum detectable drop
  is printed), or ``ok`` (passes: no drop beyond the tolerance, and the cell had the power to see
  one).

New seeds beyond the reference's are part of the new sample; cells that exist only in the new
results are listed as ``unchecked``. Higher return is better on every task.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kaleibench.analysis._io import atomic_write_json, read_json
from kaleibench.analysis.gate import (
    GateRule,
    collapsed_seeds,
    holm_reject,
    margin_pvalues,
    min_detectable_drop,
)
from kaleibench.analysis.scores import Results, load_results

REFERENCE_SCHEMA = 2
EXACT_RTOL = 1e-9
PROVENANCE_FIELDS = ("platform", "python", "versions")
FAILING = ("missing", "changed", "collapsed", "regressed")


def _unique(values: list[Any], what: str) -> Any:
    distinct = {repr(v): v for v in values}
    if len(distinct) > 1:
        raise ValueError(f"runs disagree on {what}: {sorted(distinct)}; a reference must come "
                         "from one environment")  # fmt: skip
    return next(iter(distinct.values()), None)


def _numerics_hash(spec: dict[str, Any]) -> str | None:
    """The run's numerics fingerprint hash; None if unknown or trained under several."""
    history = spec.get("numerics_history") or []
    if len(set(history)) > 1:
        return None
    return (spec.get("numerics") or {}).get("hash")


def _provenance(results: Results) -> dict[str, Any]:
    specs = [r.spec for r in results.runs.values() if r.spec and r.state == "completed"]
    prov = {f: _unique([s.get(f) for s in specs], f) for f in PROVENANCE_FIELDS}
    hashes = {_numerics_hash(s) for s in specs}
    prov["numerics_hash"] = hashes.pop() if len(hashes) == 1 else None
    prov["numerics"] = next((s.get("numerics") for s in specs if s.get("numerics")), None)
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
    rule: GateRule | None = None,
) -> dict[str, Any]:
    """Reference dict (per-seed ``final_return`` per cell, with provenance) of a results folder.

    Args:
        results_dir: Completed suite results.
        suite_name: Suite name to record (default: from ``suite.json``).
        suite_hash: Suite hash to record (default: from ``suite.json``).
        command: The command line that regenerates this reference.
        allow_incomplete: Build from an incomplete grid (missing cells are left out).
        rule: The statistical rule to store with the reference (default :class:`GateRule`).

    Raises:
        IncompleteResultsError: If the grid is incomplete and ``allow_incomplete`` is False.
        ValueError: If runs come from different platforms/versions or a cell mixes configs.
    """
    from kaleibench.analysis.scores import require_complete

    results = load_results(results_dir)
    require_complete(results, allow_incomplete, remedy="a reference needs every cell of the grid: "
                     "finish the runs (`kaleibench run` resumes them) and build it again")
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
        "rule": asdict(rule or GateRule()),
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
    if not isinstance(ref, dict) or ref.get("schema") != REFERENCE_SCHEMA:
        found = ref.get("schema") if isinstance(ref, dict) else type(ref).__name__
        raise ValueError(
            f"{path}: reference schema {found!r} is not {REFERENCE_SCHEMA}; "
            "regenerate it with the command it records"
        )
    return ref


@dataclass(frozen=True)
class CellVerdict:
    """The gate's verdict on one (variant, task); see the module docstring for the kinds."""

    variant: str
    task: str
    kind: str
    mode: str
    reference_scores: tuple[float, ...]
    new_scores: tuple[float, ...]
    detail: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether this verdict fails the check."""
        return self.kind in FAILING

    def __str__(self) -> str:
        ref = np.mean(self.reference_scores) if self.reference_scores else math.nan
        new = np.mean(self.new_scores) if self.new_scores else math.nan
        return (f"{self.kind.upper()} {self.variant} / {self.task} [{self.mode}]: mean "
                f"{ref:.4f} (n={len(self.reference_scores)}) -> {new:.4f} "
                f"(n={len(self.new_scores)}); {self.detail}")  # fmt: skip


Regression = CellVerdict  # the name of a failing verdict in earlier releases


@dataclass(frozen=True)
class CheckReport:
    """All verdicts of one check, and how they were reached."""

    verdicts: list[CellVerdict]
    exact: bool
    """Whether the numerics fingerprint (and versions, suite) matched the reference's."""
    why_not_exact: str
    unchecked: list[str]
    """``variant / task`` cells of the new results that the reference does not hold."""
    rule: GateRule

    @property
    def failures(self) -> list[CellVerdict]:
        """Verdicts that fail the check."""
        return [v for v in self.verdicts if v.failed]

    @property
    def inconclusive(self) -> list[CellVerdict]:
        """Cells that passed only because the seed counts cannot detect the designed drop."""
        return [v for v in self.verdicts if v.kind == "inconclusive"]


def _environment_matches(results: Results, reference: dict[str, Any]) -> tuple[bool, str]:
    """Same numerics fingerprint, versions, Python and suite hash as the reference (and why not)."""
    try:
        prov = _provenance(results)
    except ValueError as exc:
        return False, str(exc)
    ref_prov = reference["provenance"]
    if prov["numerics_hash"] is None or ref_prov.get("numerics_hash") is None:
        return False, "numerics fingerprint unknown or mixed"
    if prov["numerics_hash"] != ref_prov.get("numerics_hash"):
        cpu_new = (prov.get("numerics") or {}).get("cpu", {}).get("model_name", "?")
        cpu_ref = ((ref_prov.get("numerics") or {}).get("cpu") or {}).get("model_name", "?")
        return False, (f"numerics fingerprint differs ({prov['numerics_hash']} on {cpu_new} vs "
                       f"reference {ref_prov.get('numerics_hash')} on {cpu_ref})")  # fmt: skip
    for f in PROVENANCE_FIELDS:
        if prov.get(f) != ref_prov.get(f):
            return False, f"{f} differs from the reference's"
    if results.suite.hash != reference["suite"]["hash"]:
        return False, "suite definition differs from the reference's"
    return True, "numerics fingerprint, versions and suite match the reference"


def _new_cell(results: Results, variant: str, task: str) -> tuple[dict[int, float], dict[int, str]]:
    """Completed seeds -> final_return of a new cell, and seed -> config hash."""
    runs = [r for r in results.cell(variant, task) if r.state == "completed" and r.final]
    scores = {r.seed: float(r.final.get("final_return", math.nan)) for r in runs if r.final}
    hashes = {r.seed: str((r.spec or {}).get("config_hash")) for r in runs}
    return scores, hashes


def _gap(reference: dict[str, Any], task: str, ref_mean: float) -> float:
    """The task's random→heuristic gap (the unit of tolerances), else |reference mean|."""
    bounds = reference.get("bounds", {}).get(task) or {}
    low, high = bounds.get("random"), bounds.get("reference")
    if low is not None and high is not None and not math.isclose(low, high):
        return abs(high - low)
    return max(abs(ref_mean), 1e-12)


@dataclass
class _Cell:
    variant: str
    task: str
    ref: np.ndarray
    new: np.ndarray
    new_seeds: list[int]
    gap: float
    same_config: bool


def check_against_reference(
    results_dir: str | Path,
    reference: dict[str, Any],
    rule: GateRule | None = None,
) -> CheckReport:
    """Give every reference cell a verdict (see the module docstring).

    Args:
        results_dir: New suite results.
        reference: Dict from :func:`build_reference` / :func:`load_reference`.
        rule: Override the rule stored with the reference.
    """
    results = load_results(results_dir)
    rule = rule or GateRule(**reference.get("rule", {}))
    same_env, why = _environment_matches(results, reference)
    verdicts: dict[tuple[str, str], CellVerdict] = {}
    cells: list[_Cell] = []
    for variant, tasks in reference["cells"].items():
        for task, entry in tasks.items():
            if entry.get("state") != "completed":
                continue
            cell_or_verdict = _collect(results, reference, variant, task, entry)
            if isinstance(cell_or_verdict, CellVerdict):
                verdicts[(variant, task)] = cell_or_verdict
            else:
                cells.append(cell_or_verdict)
    exact = same_env and all(c.same_config for c in cells)
    if same_env and not exact:
        why = "config hashes of some cells differ from the reference's (those are statistical)"
    verdicts.update(_statistical_verdicts(cells, rule, same_env))
    order = [(v, t) for v, ts in reference["cells"].items() for t in ts if (v, t) in verdicts]
    known = {(v, t) for v, ts in reference["cells"].items() for t in ts}
    unchecked = sorted(f"{v} / {t}" for v in results.suite.variants for t in results.suite.task_ids
                       if (v, t) not in known and not results.is_na(v, t))  # fmt: skip
    return CheckReport([verdicts[k] for k in order], exact, why, unchecked, rule)


def _collect(results: Results, reference: dict[str, Any], variant: str, task: str,
             entry: dict[str, Any]) -> _Cell | CellVerdict:
    ref_by_seed = dict(zip(entry["seeds"], entry["scores"], strict=True))
    ref = np.asarray(list(ref_by_seed.values()), dtype=float)
    new_by_seed, hashes = _new_cell(results, variant, task)
    lacking = sorted(set(ref_by_seed) - set(new_by_seed))
    if lacking:
        return CellVerdict(variant, task, "missing", "-", tuple(ref),
                           tuple(new_by_seed.values()),
                           f"no completed run for seed(s) {lacking}")  # fmt: skip
    seeds = list(ref_by_seed) + sorted(set(new_by_seed) - set(ref_by_seed))
    ref_hashes = dict(zip(entry["seeds"], entry["config_hashes"], strict=True))
    same_config = all(hashes.get(s) == h for s, h in ref_hashes.items())
    new = np.asarray([new_by_seed[s] for s in seeds], dtype=float)
    return _Cell(variant, task, ref, new, seeds, _gap(reference, task, float(ref.mean())),
                 same_config)


def _statistical_verdicts(cells: list[_Cell], rule: GateRule,
                          same_env: bool) -> dict[tuple[str, str], CellVerdict]:
    """Collapse rule, margin test with Holm across cells, power; and exact equality for the
    cells whose numerics and config match the reference's (``same_env`` and same hashes)."""
    p = np.array([float(margin_pvalues(c.new[np.isfinite(c.new)], c.ref,
                                       rule.tolerance * c.gap)) for c in cells])
    reject = holm_reject(p[None], rule.alpha)[0] if cells else np.zeros(0, bool)
    m = int(np.isfinite(p).sum())
    out = {}
    for c, p_c, rej in zip(cells, p, reject, strict=True):
        key = (c.variant, c.task)
        drop = float(c.ref.mean() - np.nanmean(c.new)) if np.isfinite(c.new).any() else math.inf
        sd = float(c.ref.std(ddof=1)) if c.ref.size > 1 else math.nan
        finite = c.new[np.isfinite(c.new)]
        sd_new = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        mdd = min_detectable_drop(sd, c.new.size, c.ref.size, rule.tolerance * c.gap,
                                  rule.alpha, m, sd_new)
        extra = {"drop": drop, "drop_gaps": drop / c.gap, "p": float(p_c),
                 "mdd_gaps": mdd / c.gap, "tolerance": rule.tolerance * c.gap}
        bad = collapsed_seeds(c.new, c.ref, c.gap, rule.collapse)
        if rej:
            finding = f"drop {drop / c.gap:.2f} gaps > tolerance {rule.tolerance:.2f}, Holm-" \
                      f"significant (p={p_c:.2g}, family alpha {rule.alpha})"
            kind = "regressed"
        elif bad.any():
            seeds = [s for s, b in zip(c.new_seeds, bad, strict=True) if b]
            finding = (f"seed(s) {seeds} collapsed (non-finite or > {rule.collapse:g} gaps "
                       "below every reference seed)")
            kind = "collapsed"
        elif mdd > rule.catch * c.gap:
            finding = (f"no significant drop, but {c.new.size} vs {c.ref.size} seeds can only "
                       f"detect a drop of {mdd / c.gap:.2f} gaps (80 % power); the gate is "
                       f"meant to catch {rule.catch:.2f}")
            kind = "inconclusive"
        else:
            finding = (f"no drop beyond {rule.tolerance:.2f} gaps (p={p_c:.2g}); a drop of "
                       f"{mdd / c.gap:.2f} gaps would be caught with 80 % power")
            kind = "ok"
        if bad.any() and kind == "regressed":
            seeds = [s for s, b in zip(c.new_seeds, bad, strict=True) if b]
            finding += f"; seed(s) {seeds} collapsed"
        mode = "statistical"
        if same_env and c.same_config:
            mode = "exact"
            n = c.ref.size
            equal = np.isclose(c.new[:n], c.ref, rtol=EXACT_RTOL, atol=1e-12)
            if equal.all():
                kind, finding = "identical", "every seed equal to the reference (same numerics)"
            else:
                finding = (f"{int((~equal).sum())} of {n} seed(s) differ although numerics, "
                           f"versions and configs match; statistical rule: {kind}: {finding}")
                kind = "changed"
        out[key] = CellVerdict(c.variant, c.task, kind, mode, tuple(c.ref), tuple(c.new),
                               finding, extra)  # fmt: skip
    return out


def format_report(report: CheckReport) -> str:
    """One line per cell, a summary of the mode and the verdict counts."""
    mode = ("exact (bit-equality expected: " if report.exact
            else "statistical (") + report.why_not_exact + ")"
    rule = report.rule
    lines = [f"mode: {mode}",
             f"rule: one-sided margin test, tolerance {rule.tolerance:g} gap, Holm over cells at "
             f"alpha {rule.alpha:g}; designed to catch a drop of {rule.catch:g} gap"]
    lines += [f"  {v}" for v in report.verdicts]
    lines += [f"  UNCHECKED {c}: not in the reference" for c in report.unchecked]
    counts: dict[str, int] = {}
    for v in report.verdicts:
        counts[v.kind] = counts.get(v.kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    if report.failures:
        lines.append(f"check FAILED: {len(report.failures)} cell(s) failing ({summary})")
    elif report.inconclusive:
        lines.append(f"check passed with {len(report.inconclusive)} INCONCLUSIVE cell(s): too few "
                     f"seeds to detect the designed drop; not a match ({summary})")
    else:
        lines.append(f"check passed ({summary})")
    return "\n".join(lines)


def format_regressions(verdicts: list[CellVerdict]) -> str:
    """One line per failing cell, or a pass message."""
    failing = [v for v in verdicts if v.failed]
    if not failing:
        return "check passed: no regressed, changed, collapsed or missing cells"
    return "\n".join([f"check FAILED: {len(failing)} cell(s)", *[f"  {v}" for v in failing]])
