"""Known-answer and cross-check tests for kaleibench.analysis.stats and .significance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from kaleibench.analysis import significance as sig
from kaleibench.analysis import stats

X4x2 = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])


# ------------------------------------------------------------------------ known answers
def test_iqm_known_answer() -> None:
    # N = 8 scores, floor(8/4) = 2 trimmed from each end: mean(3, 4, 5, 6) = 4.5
    assert stats.iqm(X4x2) == 4.5
    # N = 6: floor(1.5) = 1 trimmed from each end: mean(2, 3, 4, 10) = 4.75
    assert stats.iqm(np.array([[1.0, 2.0, 3.0], [4.0, 10.0, 100.0]])) == 4.75


def test_mean_median_optimality_gap_known_answer() -> None:
    scores = np.array([[0.5, 1.5, 0.0], [1.0, 0.0, 0.2]])  # task means 0.75, 0.75, 0.1
    assert stats.mean_score(scores) == pytest.approx(1.6 / 3)
    assert stats.median_score(scores) == pytest.approx(0.75)
    # min(scores, 1) = [.5, 1, 0, 1, 0, .2], mean 0.45 -> gap 0.55
    assert stats.optimality_gap(scores) == pytest.approx(0.55)
    assert stats.optimality_gap(scores, gamma=0.5) == pytest.approx(0.5 - 1.7 / 6)


def test_probability_of_improvement_known_answer() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    y = np.array([[2.0, 4.0], [2.0, 4.0]])
    # task 0: only 3 > 2 wins (2 of 4 pairs) -> 0.5; task 1: all 4 pairs win -> 1.0
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.75)
    assert stats.probability_of_improvement(y, x) == pytest.approx(0.25)
    # ties count one half
    assert stats.probability_of_improvement(np.ones((3, 2)), np.ones((2, 2))) == 0.5


def test_performance_profile_known_answer() -> None:
    scores = np.array([[0.1, 0.5], [0.9, 0.3]])
    prof = stats.performance_profile(scores, np.array([0.0, 0.4, 1.0]), np.random.default_rng(0))
    np.testing.assert_allclose(prof.point, [1.0, 0.5, 0.0])
    assert np.all(prof.low <= prof.point) and np.all(prof.point <= prof.high)
    assert prof.low[0] == prof.high[0] == 1.0  # every resample is above tau = 0


# ----------------------------------------------------------------- bootstrap machinery
def test_counts_are_stratified_resamples() -> None:
    counts = stats.stratified_counts(np.random.default_rng(0), n_runs=5, n_tasks=3, reps=50)
    assert counts.shape == (50, 5, 3)
    assert np.all(counts.sum(axis=1) == 5)  # n draws per task, per replicate


def test_replicates_equal_explicit_resamples() -> None:
    """The multiplicity shortcut gives exactly the metric of the materialised resample."""
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(5, 3))
    counts = stats.stratified_counts(np.random.default_rng(2), 5, 3, reps=20)
    got = stats._replicate_metrics(scores, counts.astype(float), stats.METRICS, 1.0)
    for r in range(20):
        cols = [np.repeat(scores[:, t], counts[r, :, t]) for t in range(3)]
        resample = np.stack(cols, axis=1)  # (5, 3)
        for metric in stats.METRICS:
            want = stats.point_estimate(metric, resample)
            assert got[metric][r] == pytest.approx(want, abs=1e-12), metric


def test_same_seed_same_interval_different_seed_different() -> None:
    data = {"a": np.random.default_rng(3).normal(size=(6, 4))}
    first = stats.aggregate_intervals(data, seed=7, reps=500)
    again = stats.aggregate_intervals(data, seed=7, reps=500)
    other = stats.aggregate_intervals(data, seed=8, reps=500)
    assert first == again
    assert first["a"]["iqm"] != other["a"]["iqm"]
    assert first["a"]["iqm"].point == other["a"]["iqm"].point


def test_adding_a_variant_keeps_other_intervals() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    alone = stats.aggregate_intervals({"a": a}, seed=0, reps=300)
    both = stats.aggregate_intervals({"b": b, "a": a}, seed=0, reps=300)
    assert alone["a"] == both["a"]


def test_global_rng_untouched() -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    stats.aggregate_intervals({"a": X4x2}, seed=0, reps=100)
    stats.poi_interval(X4x2, X4x2 + 1, np.random.default_rng(0), reps=100)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_rejects_nan_scores() -> None:
    with pytest.raises(ValueError, match="finite"):
        stats.bootstrap_aggregates(np.array([[1.0, np.nan]]), np.random.default_rng(0), 10)


# --------------------------------------------------------------- agreement with rliable
def _rliable_aggregates(x: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array(
        [
            metrics.aggregate_iqm(x),
            metrics.aggregate_mean(x),
            metrics.aggregate_median(x),
            metrics.aggregate_optimality_gap(x),
        ]
    )


def test_agrees_with_rliable() -> None:
    rly = pytest.importorskip("rliable.library")
    rng = np.random.default_rng(5)
    data = {"a": rng.normal(0.5, 0.3, size=(8, 5)), "b": rng.normal(0.7, 0.3, size=(8, 5))}
    reps = 2000
    ours = stats.aggregate_intervals(data, seed=0, reps=reps)
    np.random.seed(0)  # rliable draws from the global RNG; only the test touches it
    points, cis = rly.get_interval_estimates(data, _rliable_aggregates, reps=reps)
    for v in data:
        for k, metric in enumerate(stats.METRICS):
            iv = ours[v][metric]
            assert iv.point == pytest.approx(points[v][k], abs=1e-12)
            # Monte Carlo error of a 2.5% quantile with 2000 reps is ~0.01 here
            assert iv.low == pytest.approx(cis[v][0, k], abs=0.03), (v, metric)
            assert iv.high == pytest.approx(cis[v][1, k], abs=0.03), (v, metric)


def test_poi_agrees_with_rliable() -> None:
    rly = pytest.importorskip("rliable.library")
    from rliable import metrics

    rng = np.random.default_rng(6)
    x, y = rng.normal(0.6, 0.3, size=(6, 4)), rng.normal(0.5, 0.3, size=(7, 4))
    ours = stats.poi_interval(x, y, np.random.default_rng(0), reps=1000)
    np.random.seed(0)
    point, ci = rly.get_interval_estimates(
        {"xy": (x, y)}, metrics.probability_of_improvement, reps=1000
    )
    assert ours.point == pytest.approx(float(point["xy"]))
    low, high = np.ravel(ci["xy"])  # interval width here is about 0.3
    # Monte Carlo error of each bound with 1000 reps is ~0.007 per method
    assert ours.low == pytest.approx(low, abs=0.04)
    assert ours.high == pytest.approx(high, abs=0.04)


def test_profile_agrees_with_rliable() -> None:
    rly = pytest.importorskip("rliable.library")
    scores = np.random.default_rng(7).uniform(size=(10, 5))
    taus = np.linspace(0, 1, 11)
    ours = stats.performance_profile(scores, taus, np.random.default_rng(0), reps=2000)
    np.random.seed(0)
    prof, ci = rly.create_performance_profile({"a": scores}, taus, reps=2000)
    np.testing.assert_allclose(ours.point, prof["a"])
    # profile values are multiples of 1/50; allow Monte Carlo error of about two steps
    np.testing.assert_allclose(ours.low, ci["a"][0], atol=0.05)
    np.testing.assert_allclose(ours.high, ci["a"][1], atol=0.05)


# ------------------------------------------- tight agreement with a stored rliable result
def _fixture_scores() -> dict[str, np.ndarray]:
    """3 variants x 10 runs x 5 tasks; task means differ, so stratification matters."""
    rng = np.random.default_rng(20211130)
    offsets = np.array([0.0, 0.3, 0.6, 0.9, 1.2])
    return {
        name: offsets + 0.1 * k + rng.normal(0.0, 0.25, size=(10, 5))
        for k, name in enumerate(("a", "b", "c"))
    }


# rliable 1.2.0 on _fixture_scores(): np.random.seed(0), then
# library.get_interval_estimates(scores, f, reps=50_000) with f = [aggregate_iqm,
# aggregate_mean, aggregate_median, aggregate_optimality_gap] (44 s of CPU, so stored here);
# then np.random.seed(0) and probability_of_improvement on (b, a), 50_000 reps (400 s).
_RLIABLE_50K = {
    "a": {  # iqm, mean, median, optimality gap
        "point": [0.601044, 0.616444, 0.495571, 0.444152],
        "low": [0.520400, 0.554662, 0.406978, 0.393335],
        "high": [0.679146, 0.677203, 0.587906, 0.495873],
    },
    "b": {  # iqm, mean, median, optimality gap
        "point": [0.645135, 0.647204, 0.579585, 0.433603],
        "low": [0.583749, 0.582875, 0.503949, 0.386505],
        "high": [0.702998, 0.713033, 0.648986, 0.479920],
    },
    "c": {  # iqm, mean, median, optimality gap
        "point": [0.805492, 0.784882, 0.911403, 0.325653],
        "low": [0.725436, 0.727521, 0.775785, 0.276361],
        "high": [0.882092, 0.843279, 1.013819, 0.373947],
    },
}
_RLIABLE_POI_B_A_50K = (0.542, 0.426, 0.658)

# Monte Carlo SD of an endpoint at 50k reps, measured over 8 kaleibench seeds on this data:
# 0.0002-0.0006 (0.001 for the widest, c's median); rliable's is the same. 0.003 is about five
# combined SDs for the typical endpoint. Not stratifying by task moves endpoints by 0.01-0.19.
_TIGHT = 0.003


def _endpoint_deviations(lows_highs: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Differences of (low, high) per variant and metric from the stored rliable intervals."""
    return np.concatenate([
        np.concatenate([low - _RLIABLE_50K[v]["low"], high - _RLIABLE_50K[v]["high"]])
        for v, (low, high) in lows_highs.items()
    ])  # fmt: skip


def _unstratified_intervals(scores: np.ndarray, pooled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CIs of the 4 metrics from a bootstrap that ignores the task strata.

    ``pooled``: draw all ``n * T`` run-task scores from the pooled set; otherwise draw whole
    runs (rows), the same run index for every task.
    """
    rng, reps = np.random.default_rng(0), 50_000
    n, n_tasks = scores.shape
    if pooled:
        flat = scores.ravel()
        res = flat[rng.integers(flat.size, size=(reps, flat.size))].reshape(reps, n, n_tasks)
    else:
        res = scores[rng.integers(n, size=(reps, n))]  # (R, n, T)
    ordered = np.sort(res.reshape(reps, -1), axis=1)
    cut = scores.size // 4
    task_means = res.mean(axis=1)
    values = np.stack([
        ordered[:, cut : scores.size - cut].mean(axis=1),
        task_means.mean(axis=1),
        np.median(task_means, axis=1),
        1.0 - np.minimum(res, 1.0).mean(axis=(1, 2)),
    ], axis=1)  # fmt: skip
    low, high = np.percentile(values, [2.5, 97.5], axis=0)
    return low, high


def test_agrees_with_stored_rliable_at_50k_reps() -> None:
    data = _fixture_scores()
    ours = stats.aggregate_intervals(data, seed=0, reps=50_000)
    for v in data:
        points = [ours[v][m].point for m in stats.METRICS]
        np.testing.assert_allclose(points, _RLIABLE_50K[v]["point"], atol=1e-6)
    lows_highs = {
        v: (
            np.array([ours[v][m].low for m in stats.METRICS]),
            np.array([ours[v][m].high for m in stats.METRICS]),
        )
        for v in data
    }
    dev = _endpoint_deviations(lows_highs)
    assert np.abs(dev).max() < _TIGHT, np.round(dev, 4)


def test_unstratified_bootstraps_would_fail_the_tight_agreement() -> None:
    """The 50k-rep agreement test has power: ignoring the task strata breaks it."""
    data = _fixture_scores()
    for pooled in (True, False):
        dev = _endpoint_deviations({v: _unstratified_intervals(s, pooled) for v, s in data.items()})
        assert np.abs(dev).max() > 3 * _TIGHT, (pooled, np.round(dev, 4))


def test_poi_agrees_with_stored_rliable_at_50k_reps() -> None:
    data = _fixture_scores()
    ours = stats.poi_interval(data["b"], data["a"], np.random.default_rng(0), reps=50_000)
    point, low, high = _RLIABLE_POI_B_A_50K
    assert ours.point == pytest.approx(point, abs=1e-9)
    # values lie on a 1/500 grid; the Monte Carlo SD of an endpoint is below one grid step
    assert ours.low == pytest.approx(low, abs=_TIGHT)
    assert ours.high == pytest.approx(high, abs=_TIGHT)


# ------------------------------------------------------------------------ significance
def test_t_interval_matches_scipy() -> None:
    x = np.array([1.0, 2.5, 2.0, 4.0])
    iv = sig.t_interval(x)
    low, high = sps.t.interval(0.95, df=3, loc=x.mean(), scale=sps.sem(x))
    assert (iv.low, iv.high) == pytest.approx((low, high))
    assert math.isnan(sig.t_interval(np.array([3.0])).low)
    band = sig.t_intervals_over_seeds(np.array([[1.0, 5.0], [2.5, np.nan], [2.0, 7.0], [4.0, 9]]))
    assert band[:, 0] == pytest.approx([iv.point, iv.low, iv.high])
    low1, high1 = sps.t.interval(0.95, df=2, loc=7.0, scale=sps.sem([5.0, 7.0, 9.0]))
    assert band[:, 1] == pytest.approx([7.0, low1, high1])


def test_welch_matches_hand_formula() -> None:
    a, b = np.array([1.0, 2.0, 4.0, 7.0]), np.array([3.0, 5.0, 9.0])
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    stat, p = sig.welch_test(a, b)
    assert stat == pytest.approx(t)
    assert p == pytest.approx(2 * sps.t.sf(abs(t), df))
    assert sig.welch_test(a, b, alternative="less")[1] == pytest.approx(sps.t.cdf(t, df))


def test_mann_whitney_matches_scipy() -> None:
    a, b = np.array([1.0, 2.0, 4.0, 7.0]), np.array([3.0, 5.0, 9.0])
    res = sps.mannwhitneyu(a, b, alternative="two-sided")
    assert sig.mann_whitney_test(a, b) == pytest.approx((res.statistic, res.pvalue))
    # U counts pairs a > b: 4>3, 7>3, 7>5 -> 3
    assert sig.mann_whitney_test(a, b)[0] == 3


def test_holm_hand_example() -> None:
    # sorted: .005*4 = .02, .01*3 = .03, .03*2 = .06, .04*1 = .04 -> running max .06
    adjusted = sig.holm_bonferroni([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    with_nan = sig.holm_bonferroni([0.2, math.nan, 0.6])
    np.testing.assert_allclose(with_nan, [0.4, math.nan, 0.6])
    assert sig.holm_bonferroni([0.9, 0.8]).max() == 1.0


def test_pairwise_tests_are_holm_corrected_over_family() -> None:
    rng = np.random.default_rng(8)
    cells = {(v, t): rng.normal(mu, 1.0, size=5) for v, mu in (("a", 0), ("b", 3))
             for t in ("t1", "t2")}  # fmt: skip
    tests = sig.pairwise_tests(cells, [("b", "a")], ["t1", "t2", "t3"])
    assert [t.task for t in tests] == ["t1", "t2"]  # t3 has no data
    raw = [t.welch_p for t in tests]
    np.testing.assert_allclose([t.welch_p_holm for t in tests], sig.holm_bonferroni(raw))
    assert all(t.mean_diff > 0 for t in tests)


def _hand_permutation_p(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(less, greater, two-sided) p of U by enumerating every split of the pooled values."""
    from itertools import combinations

    pooled = np.array(a + b, dtype=float)
    u_obs = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    us = []
    for idx in combinations(range(pooled.size), len(a)):
        xa = pooled[list(idx)]
        xb = np.delete(pooled, list(idx))
        us.append(sum((x > y) + 0.5 * (x == y) for x in xa for y in xb))
    us_arr, centre = np.array(us), len(a) * len(b) / 2
    less, greater = np.mean(us_arr <= u_obs + 1e-9), np.mean(us_arr >= u_obs - 1e-9)
    two = np.mean(np.abs(us_arr - centre) >= abs(u_obs - centre) - 1e-9)
    return float(less), float(greater), float(two)


@pytest.mark.parametrize(
    ("a", "b", "two_sided"),
    [
        ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], 0.1),  # 2 of the C(6, 3) = 20 splits are as extreme
        ([1.0, 2.0, 3.0, 3.0, 3.0], [3.0, 3.0, 4.0, 5.0, 6.0], 20 / 252),  # ~0.079
        ([1.0, 1.0], [2.0, 2.0], 1 / 3),
        ([0.0, 0.0, 1.0], [1.0, 1.0, 2.0], 0.3),  # scipy's "exact" (ties ignored) says 0.2
    ],
)
def test_mann_whitney_with_ties_is_exact(a: list[float], b: list[float], two_sided: float) -> None:
    less, greater, two = _hand_permutation_p(a, b)
    assert two == pytest.approx(two_sided)
    assert sig.mann_whitney_test(np.array(a), np.array(b))[1] == pytest.approx(two_sided)
    assert sig.mann_whitney_test(np.array(a), np.array(b), "less")[1] == pytest.approx(less)
    assert sig.mann_whitney_test(np.array(a), np.array(b), "greater")[1] == pytest.approx(greater)


def test_mann_whitney_one_sided_known_answer() -> None:
    a, b = np.array([1.0, 1.0, 1.0]), np.array([2.0, 2.0, 2.0])
    assert sig.mann_whitney_test(a, b, "less")[1] == pytest.approx(0.05)  # 1 of 20 splits
    assert sig.mann_whitney_test(a, b, "greater")[1] == pytest.approx(1.0)
    assert sig.mann_whitney_test(a, b)[0] == 0.0


def test_mann_whitney_without_ties_equals_permutation() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=6), rng.normal(0.8, 1.0, size=7)
    _, _, two = _hand_permutation_p(a.tolist(), b.tolist())
    assert sig.mann_whitney_test(a, b)[1] == pytest.approx(two)


def test_welch_with_zero_variance_on_both_sides_is_untestable() -> None:
    a, b = np.array([1.0, 1.0, 1.0]), np.array([2.0, 2.0, 2.0])
    t, p = sig.welch_test(a, b)
    assert math.isnan(t) and math.isnan(p)
    # one side with spread is still a valid test
    assert math.isfinite(sig.welch_test(a, np.array([2.0, 3.0, 2.0]))[1])
    cells = {
        ("x", "t1"): b,
        ("base", "t1"): a,
        ("x", "t2"): np.array([1.0, 2.0, 3.0]),
        ("base", "t2"): np.array([2.0, 4.0, 5.0]),
    }
    tests = sig.pairwise_tests(cells, [("x", "base")], ["t1", "t2"])
    assert math.isnan(tests[0].welch_p_holm)
    # the untestable cell does not enter the Holm family: m = 1 for Welch, 2 for Mann-Whitney
    assert tests[1].welch_p_holm == pytest.approx(tests[1].welch_p)
    assert sig.n_testable(tests) == (1, 2)


def test_mann_whitney_equals_scipy_full_permutation() -> None:
    """The counted permutation distribution gives scipy's enumerated p-values, ties included."""
    rng = np.random.default_rng(12)
    method = sps.PermutationMethod(n_resamples=np.inf)
    for _ in range(25):
        n_a, n_b = rng.integers(2, 7, size=2)
        a = rng.integers(0, 4, size=n_a).astype(float)  # few distinct values: many ties
        b = rng.integers(0, 4, size=n_b).astype(float) + rng.integers(0, 2)
        for alternative in ("two-sided", "less", "greater"):
            ref = sps.mannwhitneyu(a, b, alternative=alternative, method=method)
            u, p = sig.mann_whitney_test(a, b, alternative)
            assert u == pytest.approx(float(ref.statistic)), (a, b)
            assert p == pytest.approx(float(ref.pvalue), abs=1e-12), (a, b, alternative)


def test_mann_whitney_large_samples_use_the_normal_approximation() -> None:
    rng = np.random.default_rng(13)
    a, b = np.round(rng.normal(size=12)), np.round(rng.normal(0.5, 1.0, size=12))
    ref = sps.mannwhitneyu(a, b, method="asymptotic")
    assert sig.mann_whitney_test(a, b) == pytest.approx((ref.statistic, ref.pvalue))
    # the exact path is fast even at the largest size it covers (C(20, 10) splits)
    import time

    start = time.perf_counter()
    sig.mann_whitney_test(a[:10], b[:10])
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("n_a, n_b", [(2, 2), (3, 3), (3, 5), (5, 5), (10, 1)])
def test_mann_whitney_smallest_p_is_that_of_complete_separation(n_a: int, n_b: int) -> None:
    # known answers: 2 / C(n_a + n_b, n_a), and the exact test reaches it on separated samples
    expected = {(2, 2): 2 / 6, (3, 3): 0.1, (3, 5): 2 / 56, (5, 5): 2 / 252, (10, 1): 2 / 11}
    assert sig.mwu_smallest_p(n_a, n_b) == pytest.approx(expected[n_a, n_b])
    a, b = np.arange(n_a) + 100.0, np.arange(n_b, dtype=float)
    assert sig.mann_whitney_test(a, b)[1] == pytest.approx(expected[n_a, n_b])
    assert sig.mann_whitney_test(b, a)[1] == pytest.approx(expected[n_a, n_b])


def test_mann_whitney_mark_possible_follows_holm_first_step() -> None:
    def pair(n: int, task: str) -> sig.PairTest:
        return sig.PairTest("x", "base", task, n, n, 1.0, 1.0, 0.01, 9.0, 0.5)

    # 3 vs 3: smallest p 0.1 > 0.05 even alone; 5 vs 5: 0.0079 < 0.05 / 6 but not < 0.05 / 7
    assert not sig.mwu_mark_possible([pair(3, "t")], 0.05)
    assert sig.mwu_mark_possible([pair(5, str(i)) for i in range(6)], 0.05)
    assert not sig.mwu_mark_possible([pair(5, str(i)) for i in range(7)], 0.05)
    assert sig.mwu_mark_possible([pair(3, "a"), pair(10, "b")], 0.05)  # one pair suffices
