"""Aggregate bootstrap: kaleibench's vectorised stratified bootstrap vs rliable, same data.

5 variants × 7 tasks × 10 seeds, IQM / mean / median / optimality gap, 50,000 reps each.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from conftest import RATIO_LINES

from kaleibench.analysis.stats import aggregate_intervals


def _scores() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"v{k}": rng.normal(0.5 + 0.1 * k, 0.3, size=(10, 7)) for k in range(5)}


def test_bootstrap_vs_rliable(benchmark: Any) -> None:
    from rliable import library, metrics

    scores = _scores()
    times: dict[str, float] = {}

    def ours() -> None:
        t = time.perf_counter()
        aggregate_intervals(scores, seed=0, reps=50_000)
        times["ours"] = time.perf_counter() - t

    benchmark.pedantic(ours, rounds=1, iterations=1)

    def aggregate(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x),
                         metrics.aggregate_median(x), metrics.aggregate_optimality_gap(x)])

    np.random.seed(0)
    t = time.perf_counter()
    library.get_interval_estimates(scores, aggregate, reps=50_000)
    times["rliable"] = time.perf_counter() - t
    RATIO_LINES.append(f"aggregate bootstrap: rliable {times['rliable']:.2f} s / kaleibench "
                       f"{times['ours']:.2f} s = {times['rliable'] / times['ours']:.1f}x "
                       "(goal >= 10x)")


def test_mann_whitney_exact_with_ties(benchmark: Any) -> None:
    """Worst case of the exact Mann-Whitney path: 10 vs 10 seeds with ties (C(20, 10) splits).

    Reported next to the asymptotic test on the same data, for the cost of exactness.
    """
    from scipy import stats as sps

    from kaleibench.analysis.significance import mann_whitney_test

    rng = np.random.default_rng(0)
    a, b = np.round(rng.normal(0, 1, 10)), np.round(rng.normal(0.5, 1, 10))  # rounded: ties
    times: dict[str, float] = {}

    def exact() -> None:
        t = time.perf_counter()
        mann_whitney_test(a, b)
        times["exact"] = time.perf_counter() - t

    benchmark.pedantic(exact, rounds=1, iterations=1)
    t = time.perf_counter()
    sps.mannwhitneyu(a, b, method="asymptotic")
    times["asymptotic"] = time.perf_counter() - t
    RATIO_LINES.append(f"Mann-Whitney 10 vs 10 with ties: exact {times['exact'] * 1e3:.2f} ms, "
                       f"asymptotic {times['asymptotic'] * 1e3:.2f} ms")
