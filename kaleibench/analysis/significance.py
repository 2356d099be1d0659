"""Per-task intervals and hypothesis tests between variants.

Per-task intervals use Student's t with the *real* number of completed seeds of each cell
(``n - 1`` degrees of freedom), not a normal approximation: with 3-10 seeds the difference
matters. Two tests are run per (variant pair, task): Welch's unequal-variance t-test (means,
no equal-variance assumption) and the Mann-Whitney U test (ranks, no normality assumption), both
two-sided; at small n the Mann-Whitney p-value is exact, ties included. A test that cannot be
computed (too few seeds, or Welch with zero variance on both sides) has a NaN p-value. Each
family of tests (all Welch p-values of one call, and separately all Mann-Whitney p-values)
is corrected with the Holm-Bonferroni step-down procedure, which controls the family-wise
error rate without independence assumptions and is uniformly more powerful than plain
Bonferroni.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from kaleibench.analysis.stats import Interval

T_CI_METHOD = "95% Student-t interval over seeds"
"""Short description of the per-task interval method used in captions."""


def t_interval(values: np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean of ``values (n,)`` with a Student-t interval on ``n - 1`` degrees of freedom.

    With ``n < 2`` the interval is undefined and its bounds are NaN.

    Examples:
        >>> t_interval(np.array([1.0, 2.0, 3.0])).format()
        '2.00 [-0.48, 4.48]'
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, math.nan, math.nan)
    half = float(sps.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half)


def t_intervals_over_seeds(curves: np.ndarray, confidence: float = 0.95) -> np.ndarray:
    """Vectorised :func:`t_interval` along axis 0.

    Args:
        curves: ``(n_seeds, n_points)`` values; NaN entries are ignored per column.
        confidence: Interval coverage.

    Returns:
        ``(3, n_points)``: mean, low, high (NaN bounds where fewer than 2 seeds).
    """
    x = np.asarray(curves, dtype=float)
    n = np.isfinite(x).sum(axis=0)  # (P,)
    safe = np.where(np.isfinite(x), x, 0.0)
    mean = np.where(n > 0, safe.sum(axis=0) / np.maximum(n, 1), np.nan)
    dev = np.where(np.isfinite(x), x - mean, 0.0)
    std = np.sqrt((dev**2).sum(axis=0) / np.maximum(n - 1, 1))
    q = sps.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1))
    half = np.where(n >= 2, q * std / np.sqrt(np.maximum(n, 1)), np.nan)
    return np.stack([mean, mean - half, mean + half])


def holm_bonferroni(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down; monotone; capped at 1).

    The ``i``-th smallest of ``m`` p-values is multiplied by ``m - i`` (0-based ``i``), a running
    maximum keeps the order, and a hypothesis is rejected at level alpha iff its adjusted p is
    at most alpha. NaN p-values (untestable cells) stay NaN and do not count in ``m``.

    Examples:
        >>> holm_bonferroni([0.01, 0.04, 0.03]).round(3).tolist()
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    scaled = p[order] * (m - np.arange(m))  # (m,)
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


@dataclass(frozen=True)
class PairTest:
    """Two-sided Welch and Mann-Whitney tests of ``variant`` vs ``other`` on one task."""

    variant: str
    other: str
    task: str
    n_variant: int
    n_other: int
    mean_diff: float
    welch_t: float
    welch_p: float
    mwu_u: float
    mwu_p: float
    welch_p_holm: float = math.nan
    mwu_p_holm: float = math.nan


def welch_test(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided") -> tuple[float, float]:
    """Welch's t statistic and p-value of ``mean(a) - mean(b)``.

    NaN ("untestable") when either n < 2, or when both samples have zero variance: the
    statistic's standard error and its degrees of freedom are then 0/0, so there is no test,
    even if the means differ (scipy would report t = inf and p = 0).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan, math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return math.nan, math.nan
    res = sps.ttest_ind(a, b, equal_var=False, alternative=alternative)
    return float(res.statistic), float(res.pvalue)


MWU_PERMUTATION_MAX_N = 20
"""Largest ``n_a + n_b`` for which Mann-Whitney p-values are exact (ties included)."""


def _mwu_permutation_p(a: np.ndarray, b: np.ndarray, alternative: str) -> tuple[float, float]:
    """U of ``a`` vs ``b`` and its exact permutation p-value, ties included.

    The permutation distribution of U (every way to split the pooled values into groups of
    ``n_a`` and ``n_b``, equally likely under H0) is counted rather than enumerated: with the
    pooled mid-ranks doubled to integers, ``counts[k, s]`` is the number of ``k``-subsets with
    doubled rank sum ``s``, built one value at a time (``O(N * n_a * N^2)`` instead of
    ``C(N, n_a)`` splits). U is the rank sum of ``a`` minus ``n_a (n_a + 1) / 2``, so tail
    probabilities of the rank sum are those of U. Two-sided: twice the smaller tail, at most 1
    (the definition of scipy's ``permutation_test``, which gives the same values by enumeration).
    """
    pooled = np.concatenate([a, b])
    doubled = np.rint(2.0 * sps.rankdata(pooled)).astype(np.int64)  # mid-ranks are k / 2
    n_a, total = a.size, int(doubled.sum())
    counts = np.zeros((n_a + 1, total + 1))
    counts[0, 0] = 1.0
    for r in doubled:
        counts[1:, r:] = counts[1:, r:] + counts[:-1, : total + 1 - r]
    dist = counts[n_a] / counts[n_a].sum()  # P(doubled rank sum of a == s)
    observed = int(doubled[:n_a].sum())
    less, greater = float(dist[: observed + 1].sum()), float(dist[observed:].sum())
    u = observed / 2.0 - n_a * (n_a + 1) / 2.0
    if alternative == "less":
        return u, min(less, 1.0)
    if alternative == "greater":
        return u, min(greater, 1.0)
    if alternative == "two-sided":
        return u, min(2.0 * min(less, greater), 1.0)
    raise ValueError(f"unknown alternative {alternative!r}")


def mann_whitney_test(
    a: np.ndarray, b: np.ndarray, alternative: str = "two-sided"
) -> tuple[float, float]:
    """Mann-Whitney U of ``a`` vs ``b`` (U counts pairs ``a > b``, ties one half) and its p-value.

    Statistical choice: with a few seeds per side the normal approximation is anti-conservative
    when there are ties (e.g. ``[1, 1, 1]`` vs ``[2, 2, 2]``: approximate p = 0.047, while no
    split of 3 vs 3 values can give less than 2 / C(6, 3) = 0.1). So, for
    ``n_a + n_b <=`` :data:`MWU_PERMUTATION_MAX_N`, the p-value is the exact permutation p-value
    given the observed (possibly tied) values, as ``scipy.stats.mannwhitneyu`` with
    ``method=PermutationMethod(n_resamples=np.inf)`` computes it (see
    :func:`_mwu_permutation_p`; scipy's ``method="exact"`` would ignore the ties). Larger samples
    use the tie-corrected normal approximation.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 1 or b.size < 1:
        return math.nan, math.nan
    if a.size + b.size <= MWU_PERMUTATION_MAX_N:
        return _mwu_permutation_p(a, b, alternative)
    res = sps.mannwhitneyu(a, b, alternative=alternative, method="asymptotic")
    return float(res.statistic), min(float(res.pvalue), 1.0)


def pairwise_tests(
    cells: dict[tuple[str, str], np.ndarray],
    pairs: Sequence[tuple[str, str]],
    tasks: Sequence[str],
) -> list[PairTest]:
    """Welch and Mann-Whitney tests for every (pair, task), Holm-corrected per test family.

    Args:
        cells: ``{(variant, task): per-seed scores (n,)}``; absent keys (N/A) are skipped.
        pairs: ``(variant, other)`` pairs to compare, e.g. every variant vs the baseline.
        tasks: Tasks to test on.

    Returns:
        One :class:`PairTest` per pair and task present in ``cells``, with Holm-adjusted
        p-values over the whole returned family. Untestable comparisons (NaN p) stay NaN and
        do not count towards the Holm correction; see :func:`n_testable`.
    """
    raw: list[PairTest] = []
    for variant, other in pairs:
        for task in tasks:
            a, b = cells.get((variant, task)), cells.get((other, task))
            if a is None or b is None or a.size == 0 or b.size == 0:
                continue
            t, p_t = welch_test(a, b)
            u, p_u = mann_whitney_test(a, b)
            diff = float(a.mean() - b.mean())
            raw.append(PairTest(variant, other, task, a.size, b.size, diff, t, p_t, u, p_u))
    welch_holm = holm_bonferroni([r.welch_p for r in raw])
    mwu_holm = holm_bonferroni([r.mwu_p for r in raw])
    return [
        PairTest(**{**r.__dict__, "welch_p_holm": float(pw), "mwu_p_holm": float(pm)})
        for r, pw, pm in zip(raw, welch_holm, mwu_holm, strict=True)
    ]


def mwu_smallest_p(n_a: int, n_b: int) -> float:
    """Smallest two-sided exact Mann-Whitney p of ``n_a`` vs ``n_b`` seeds: 2 / C(n_a + n_b, n_a).

    Complete separation (every seed of one side above every seed of the other) is the most
    extreme of the C(n_a + n_b, n_a) equally likely rank arrangements, and two-sided it counts
    both directions; ties only make p larger. 3 vs 3 seeds: 2 / 20 = 0.1.
    """
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def mwu_mark_possible(tests: Sequence[PairTest], alpha: float) -> bool:
    """Whether any Mann-Whitney comparison of ``tests`` could be significant after Holm.

    Holm's first, strictest step needs the smallest p below α / m (m = the testable family);
    every later step's threshold is larger but applies only after the first rejects. So if no
    comparison can reach p < α / m at its seed counts (:func:`mwu_smallest_p`), none can be
    marked, whatever the data.
    """
    m = n_testable(tests)[1]
    return any(math.isfinite(t.mwu_p) and mwu_smallest_p(t.n_variant, t.n_other) * m < alpha
               for t in tests)  # fmt: skip


def n_testable(tests: Sequence[PairTest]) -> tuple[int, int]:
    """How many Welch and Mann-Whitney comparisons had a p-value (the Holm family sizes)."""
    welch = sum(1 for t in tests if math.isfinite(t.welch_p))
    mwu = sum(1 for t in tests if math.isfinite(t.mwu_p))
    return welch, mwu
