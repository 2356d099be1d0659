"""``write_report``: from a results folder to ``report.md`` with tables and figures.

Output layout under ``out_dir`` (default ``<results_dir>/report``)::

    report.md                 embeds every table (inline Markdown) and figure (PNG)
    tables/<name>.{md,tex,csv}
    figures/<name>.{png,pdf}

Every file is rewritten atomically on each call (never appended). Aggregates use normalised
scores and need the suite's bounds; per-task tables use raw team returns.

This module computes (:func:`analyse`) and delegates the writing to
:mod:`kaleibench.analysis.report_render`, which never imports it back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kaleibench.analysis import significance as sig
from kaleibench.analysis import stats
from kaleibench.analysis.headline import Headline, compute_headline
from kaleibench.analysis.report_render import Analysis, render_report
from kaleibench.analysis.scores import (
    Results,
    aggregate_view,
    cell_scores,
    load_results,
    require_complete,
    score_matrices,
)


def _task_cells(
    results: Results, kind: str, confidence: float
) -> tuple[dict[tuple[str, str], stats.Interval | None], dict[tuple[str, str], np.ndarray]]:
    intervals: dict[tuple[str, str], stats.Interval | None] = {}
    raw: dict[tuple[str, str], np.ndarray] = {}
    for v in results.suite.variants:
        for t in results.suite.task_ids:
            if results.is_na(v, t):
                intervals[(v, t)] = None
                continue
            values = cell_scores(results, v, t, kind)
            if values.size:
                raw[(v, t)] = values
                intervals[(v, t)] = sig.t_interval(values, confidence)
    return intervals, raw


def analyse(
    results_dir: str | Path,
    baseline: str | None = None,
    seed: int = 0,
    reps: int = 50_000,
    allow_incomplete: bool = False,
    kind: str = "final",
    confidence: float = 0.95,
    alpha: float = 0.05,
) -> Analysis:
    """Load a results folder and compute every statistic shown by :func:`write_report`."""
    results = load_results(results_dir)
    completeness = require_complete(results, allow_incomplete)
    variants = list(results.suite.variants)
    baseline = baseline or ("qmix" if "qmix" in variants else variants[0])
    if baseline not in variants:
        raise ValueError(f"baseline {baseline!r} is not a variant of this suite: {variants}")
    task_cells, raw = _task_cells(results, kind, confidence)
    pairs = [(v, baseline) for v in variants if v != baseline]
    tests = sig.pairwise_tests(raw, pairs, results.suite.task_ids)
    agg_scores: dict[str, np.ndarray] = {}
    agg_tasks: list[str] = []
    agg_left_out: list[str] = []
    intervals: dict[str, dict[str, stats.Interval]] = {}
    poi: dict[str, stats.Interval] = {}
    profiles: dict[str, stats.Profile] = {}
    if results.suite.has_bounds:
        matrices = score_matrices(results, kind, normalised=True)
        agg_left_out = unfinished_variants(results, matrices, baseline)
        matrices = {v: m for v, m in matrices.items() if v not in agg_left_out}
        agg_scores, agg_tasks = aggregate_view(matrices, results.suite.task_ids)
        if agg_tasks and all(s.shape[0] > 0 for s in agg_scores.values()):
            # below stats.MIN_BOOTSTRAP_N runs the percentile bootstrap under-covers badly:
            # t-intervals where they exist, point estimates otherwise, no profile bands
            intervals = stats.report_aggregate_intervals(agg_scores, seed, reps, confidence)
            poi = stats.report_poi_against(agg_scores, baseline, seed, reps, confidence)
            profiles = stats.performance_profiles(
                agg_scores, _taus(agg_scores), seed, min(reps, 2_000), confidence,
                bands=stats.bootstrap_applies(agg_scores),
            )  # fmt: skip
    headline, headline_error = _headline(results, kind, seed, reps, confidence)
    return Analysis(
        results, completeness, baseline, kind, seed, reps, confidence, alpha,
        agg_scores, agg_tasks, intervals, poi, profiles, task_cells, tests,
        headline, headline_error, agg_left_out,
    )  # fmt: skip


def unfinished_variants(results: Results, matrices: dict[str, np.ndarray],
                        baseline: str) -> list[str]:
    """Variants an incomplete grid's aggregates leave out: those with no finished run yet on
    some task they can run on.

    Aggregates compare variants on the same tasks, so one such variant would otherwise shrink
    every variant's aggregate to the tasks it has finished (or cancel the aggregates when it
    has finished none). A complete grid has none; neither has a grid whose baseline is
    unfinished (the aggregates then keep every variant, on the tasks they share).
    """
    left_out = [
        v for v, m in matrices.items()
        if any(not np.isfinite(m[:, j]).any() and not results.is_na(v, t)
               for j, t in enumerate(results.suite.task_ids))
    ]  # fmt: skip
    return [] if baseline in left_out else left_out


def _headline(results: Results, kind: str, seed: int, reps: int,
              confidence: float) -> tuple[Headline | None, str]:
    """The declared comparison's headline, or why there is none (e.g. a side was left out with
    ``--variants``)."""
    if results.suite.compare is None:
        return None, ""
    a, b = results.suite.compare
    try:
        return compute_headline(results, a, b, kind, seed, reps, confidence), ""
    except ValueError as exc:
        return None, str(exc)


def _taus(score_dict: dict[str, np.ndarray], n: int = 101) -> np.ndarray:
    """Profile thresholds spanning ``[min(0, lowest score), max(1, highest score)]``."""
    values = np.concatenate([s.ravel() for s in score_dict.values()])
    return np.linspace(min(0.0, float(values.min())), max(1.0, float(values.max())), n)


def write_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    baseline: str | None = None,
    seed: int = 0,
    reps: int = 50_000,
    allow_incomplete: bool = False,
    kind: str = "final",
    figures: bool = True,
) -> Path:
    """Write ``report.md`` with tables (MD/LaTeX/CSV) and figures (PNG/PDF) for a results folder.

    Args:
        results_dir: One suite's results folder (``<results_dir>/suite.json`` and run dirs).
        out_dir: Output folder; defaults to ``<results_dir>/report``.
        baseline: Variant the others are tested against (default ``qmix`` or the first).
        seed: Seed of every bootstrap (per-variant generators derive from it).
        reps: Bootstrap replicates for aggregates and POI (profiles and curves use at most 2000).
        allow_incomplete: Report on an incomplete grid instead of raising; gaps are listed.
        kind: Score kind, ``"final"`` or ``"absolute"`` (see ``scores.SCORE_KEYS``).
        figures: Render figures; False writes tables and ``report.md`` only (fast, for CI).

    Returns:
        Path of ``report.md``.

    Raises:
        IncompleteResultsError: If cells are missing and ``allow_incomplete`` is False.
    """
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    analysis = analyse(results_dir, baseline, seed, reps, allow_incomplete, kind)
    return render_report(analysis, out, figures)
