"""Learning curves from ``metrics.jsonl``: per task (mean ± t CI over seeds) and per suite (IQM).

Alignment: the eval schedule is deterministic, so all seeds of a cell normally share the same
``t_env`` values. To stay correct when they do not (e.g. a running run, or a resumed run whose
eval landed a few steps later), each seed's curve is linearly interpolated onto the union of
the cell's ``t_env`` values and is NaN outside its own range; no extrapolation is done.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kaleibench.analysis._io import read_jsonl
from kaleibench.analysis.scores import Results, normalise
from kaleibench.analysis.significance import t_intervals_over_seeds
from kaleibench.analysis.stats import (
    iqm,
    iqm_from_counts,
    percentile_interval,
    stratified_counts,
    variant_rng,
)

KALEI_PREFIXES = ("sparsity/", "mask_distance", "div_loss", "div_coef", "n_reset")
"""Train-row keys plotted as Kalei sparsity/diversity diagnostics."""

ALMA_PREFIXES = ("alloc/",)
"""Train-row keys plotted as ALMA allocation diagnostics."""


@dataclass(frozen=True)
class Curve:
    """A metric over environment steps for the seeds of one cell.

    Attributes:
        steps: ``(P,)`` environment steps.
        values: ``(n_seeds, P)``; NaN where a seed has no value.
        seeds: The seeds of the rows.
    """

    steps: np.ndarray
    values: np.ndarray
    seeds: tuple[int, ...]

    def summary(self, confidence: float = 0.95) -> np.ndarray:
        """``(3, P)`` mean, low, high over seeds (Student t with the real n per point)."""
        return t_intervals_over_seeds(self.values, confidence)


@functools.lru_cache(maxsize=4096)
def _cached_rows(path: str, mtime_ns: int) -> tuple[dict[str, Any], ...]:
    return tuple(read_jsonl(Path(path)))


def read_metrics(run_dir: Path) -> tuple[dict[str, Any], ...]:
    """Rows of a run's ``metrics.jsonl`` (empty if absent); torn lines dropped with a warning."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return ()
    return _cached_rows(str(path), path.stat().st_mtime_ns)


def _series(rows: tuple[dict[str, Any], ...], kind: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(t_env (P,), value (P,))`` sorted by step; a repeated step keeps its last row."""
    by_step = {
        float(r["t_env"]): float(r[key])
        for r in rows
        if r.get("kind") == kind and isinstance(r.get(key), int | float)
    }
    if not by_step:
        return np.empty(0), np.empty(0)
    t = np.asarray(sorted(by_step))
    return t, np.asarray([by_step[x] for x in t])


def _align(series: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    out = np.full((len(series), grid.size), np.nan)
    for i, (t, v) in enumerate(series):
        if t.size == 0:
            continue
        inside = (grid >= t[0]) & (grid <= t[-1])
        out[i, inside] = np.interp(grid[inside], t, v)
    return out


def cell_curve(
    results: Results,
    variant: str,
    task: str,
    key: str = "return_mean",
    kind: str = "eval",
    n_points: int | None = None,
) -> Curve | None:
    """One metric of one cell over steps, for every seed that logged it.

    Args:
        results: Loaded results.
        variant: Variant name.
        task: Task id.
        key: Row key, e.g. ``"return_mean"`` (eval) or ``"sparsity/fc1"`` (train).
        kind: Row kind, ``"eval"`` or ``"train"``.
        n_points: If set, use an evenly spaced grid of this size instead of the union of steps
            (train rows are dense).

    Returns:
        A :class:`Curve`, or None when no seed logged ``key``.
    """
    runs = [r for r in results.cell(variant, task) if r.state != "n/a"]
    series = [_series(read_metrics(r.path), kind, key) for r in runs]
    kept = [(r.seed, s) for r, s in zip(runs, series, strict=True) if s[0].size]
    if not kept:
        return None
    steps = np.unique(np.concatenate([s[0] for _, s in kept]))
    if n_points is not None and steps.size > n_points:
        steps = np.linspace(steps[0], steps[-1], n_points)
    values = _align([s for _, s in kept], steps)
    return Curve(steps, values, tuple(seed for seed, _ in kept))


def episode_return_range(results: Results, variants: list[str], task: str) -> tuple[float, float]:
    """``(min, max)`` of the single-episode eval returns of ``task`` over ``variants``' runs.

    A seed's eval score is a mean of such returns, so the expected score of any seed, and the
    mean over seeds, lies within the range of returns the task produces; the observed extremes
    are the best available estimate of that range. Rows without per-episode ``returns`` count
    with their ``return_mean``. (NaN, NaN) when no eval row exists.
    """
    lo, hi = np.inf, -np.inf
    for variant in variants:
        for run in results.cell(variant, task):
            for row in read_metrics(run.path):
                if row.get("kind") != "eval":
                    continue
                values = row.get("returns")
                if not isinstance(values, list) or not values:
                    values = [row.get("return_mean")]
                finite = [float(v) for v in values
                          if isinstance(v, int | float) and np.isfinite(v)]  # fmt: skip
                if finite:
                    lo, hi = min(lo, min(finite)), max(hi, max(finite))
    return (float(lo), float(hi)) if lo <= hi else (float("nan"), float("nan"))


def metric_keys(results: Results, prefixes: tuple[str, ...], kind: str = "train") -> list[str]:
    """Sorted metric keys of ``kind`` rows, over all runs, that start with one of ``prefixes``."""
    keys: set[str] = set()
    for run in results.runs.values():
        for row in read_metrics(run.path):
            if row.get("kind") == kind:
                keys.update(k for k in row if k.startswith(prefixes))
    return sorted(keys)


def suite_iqm_curve(
    results: Results,
    variant: str,
    tasks: list[str],
    seed: int,
    reps: int = 2_000,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """IQM of normalised eval returns across runs and tasks at each step, with bootstrap CIs.

    Statistical choice: at every step the ``(n_seeds, n_tasks)`` matrix of normalised returns is
    summarised by its IQM with a stratified percentile-bootstrap interval (as in
    :mod:`kaleibench.analysis.stats`). Only seeds present on every task are used, and steps where
    any of them lacks a value are dropped.

    Returns:
        ``(steps (P,), (3, P) iqm/low/high)``; empty arrays when nothing aligns.
    """
    curves = {t: cell_curve(results, variant, t) for t in tasks}
    present = [c for c in curves.values() if c is not None]
    if not tasks or len(present) < len(tasks):
        return np.empty(0), np.empty((3, 0))
    grid = np.unique(np.concatenate([c.steps for c in present]))
    common = sorted(set.intersection(*(set(c.seeds) for c in present)))
    columns = []
    for task, c in zip(tasks, present, strict=True):
        rows = [c.values[c.seeds.index(s)] for s in common]
        aligned = _align([(c.steps, row) for row in rows], grid)  # (n, P)
        columns.append(normalise(aligned, results.suite.task(task)))
    mats = np.stack(columns, axis=-1)  # (n, P, T)
    ok = np.isfinite(mats).all(axis=(0, 2))  # (P,)
    mats, grid = mats[:, ok, :], grid[ok]
    rng = variant_rng(seed, f"curve:{variant}")
    out = np.empty((3, grid.size))
    for p in range(grid.size):
        scores = mats[:, p, :]  # (n, T)
        counts = stratified_counts(rng, scores.shape[0], scores.shape[1], reps).astype(float)
        samples = iqm_from_counts(scores, counts)
        low, high = percentile_interval(samples, confidence)
        out[:, p] = (iqm(scores), low, high)
    return grid, out
