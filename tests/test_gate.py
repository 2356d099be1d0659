"""The gate's statistical rule: known answers, Holm equivalence, and simulated error rates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from kaleibench.analysis.gate import (
    GateRule,
    alarms,
    collapsed_seeds,
    holm_reject,
    margin_pvalues,
    min_detectable_drop,
    simulate,
)
from kaleibench.analysis.significance import holm_bonferroni


def test_margin_pvalue_is_welch_on_the_shifted_sample() -> None:
    new, ref = np.array([1.0, 2.0, 4.0]), np.array([3.0, 3.5, 5.0, 6.0])
    expected = sps.ttest_ind(new + 0.5, ref, equal_var=False, alternative="less").pvalue
    assert margin_pvalues(new, ref, 0.5) == pytest.approx(expected, rel=1e-12)
    # by hand: shift = 7/3 - 4.375 + 0.5, se² = s_x²/3 + s_r²/4
    sx2, sr2 = np.var(new, ddof=1), np.var(ref, ddof=1)
    t = (7 / 3 - 4.375 + 0.5) / np.sqrt(sx2 / 3 + sr2 / 4)
    df = (sx2 / 3 + sr2 / 4) ** 2 / ((sx2 / 3) ** 2 / 2 + (sr2 / 4) ** 2 / 3)
    assert margin_pvalues(new, ref, 0.5) == pytest.approx(sps.t.cdf(t, df), rel=1e-12)


def test_margin_pvalue_edge_cases() -> None:
    assert np.isnan(margin_pvalues([1.0], [1.0, 2.0], 0.1))  # n < 2: untestable
    assert margin_pvalues([1.0, 1.0], [2.0, 2.0], 0.5) == 0.0  # no noise, drop 1 > 0.5
    assert margin_pvalues([1.0, 1.0], [1.2, 1.2], 0.5) == 1.0  # no noise, drop 0.2 < 0.5
    batch = margin_pvalues(np.zeros((4, 3)) + [[0.0, 1, 2]], np.ones((4, 3)), 0.0)
    assert batch.shape == (4,)


def test_holm_reject_equals_holm_bonferroni_row_by_row() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(size=(3000, 7)) ** 3
    p[::5, 3] = np.nan
    p[::11] = np.round(p[::11], 2)  # ties
    expected = np.array([holm_bonferroni(row) <= 0.05 for row in p])
    assert np.array_equal(holm_reject(p, 0.05), expected)


def test_collapse_names_non_finite_and_far_seeds() -> None:
    mask = collapsed_seeds(np.array([-1.0, np.nan, -3.9, -4.2, -np.inf]), np.array([-1.0, -0.9]),
                           gap=1.0, collapse=3.0)
    assert mask.tolist() == [False, True, False, True, True]


def test_min_detectable_drop_has_the_power_it_claims() -> None:
    rule = GateRule()
    for m, n, sd in [(3, 5, 0.15), (2, 8, 0.2), (42, 10, 0.2), (1, 3, 0.1)]:
        mdd = min_detectable_drop(sd, n, n, rule.tolerance, rule.alpha, m)
        _, power = simulate(rule, m, n, n, sd, drop=mdd, draws=8000)
        assert 0.78 <= power <= 0.93, (m, n, sd, mdd, power)
    assert min_detectable_drop(0.2, 1, 5, 0.1, 0.05, 3) == np.inf


@pytest.mark.parametrize("m, n, sd", [(3, 5, 0.15), (6, 5, 0.10), (42, 10, 0.18)])
def test_suite_false_alarm_at_most_alpha_and_designed_drop_caught(m: int, n: int,
                                                                   sd: float) -> None:
    """Whenever the rule calls a design conclusive (MDD ≤ catch), it keeps its promises:
    family-wise false alarms ≤ 5 % with every cell unchanged, and ≥ 80 % power for a drop of
    ``catch`` gaps in one cell."""
    rule = GateRule()
    assert min_detectable_drop(sd, n, n, rule.tolerance, rule.alpha, m) <= rule.catch
    false_alarm, power = simulate(rule, m, n, n, sd, drop=rule.catch)
    assert false_alarm <= 0.05
    assert power >= 0.80


def test_two_seeds_cannot_be_conclusive() -> None:
    """The smoke suite's size: the rule must say so (MDD far above the designed drop)."""
    rule = GateRule()
    assert min_detectable_drop(0.2, 2, 2, rule.tolerance, rule.alpha, 6) > 3 * rule.catch
    false_alarm, power = simulate(rule, 6, 2, 2, 0.2, drop=rule.catch, draws=5000)
    assert false_alarm <= 0.05 and power < 0.2


def test_the_committed_learning_gate_keeps_its_promises() -> None:
    """The CI gate's own design (its reference file: cells, seeds, seed SDs, rule) has
    suite-level false alarms ≤ 5 % and ≥ 80 % power for the drop it is meant to catch, at a
    seed SD as large as the worst measured one could plausibly be (its one-sided 90 % upper
    confidence bound: a handful of seeds estimates an SD poorly), and every gated variant
    learned: every seed above `random`, the mean's 95 % lower bound > a quarter gap."""
    import json
    from pathlib import Path

    from scipy import stats

    ref = json.loads((Path(__file__).parents[1] / "results/reference/gate.json").read_text())
    rule = GateRule(**ref["rule"])
    cells = [(task, entry) for tasks in ref["cells"].values() for task, entry in tasks.items()
             if entry["state"] == "completed"]
    assert len(cells) >= 2
    sds, ns = [], []
    for task, entry in cells:
        bounds = ref["bounds"][task]
        gap = bounds["reference"] - bounds["random"]
        scores = (np.asarray(entry["scores"]) - bounds["random"]) / gap  # normalised
        n = len(scores)
        lower = scores.mean() - stats.t.ppf(0.975, n - 1) * scores.std(ddof=1) / np.sqrt(n)
        assert scores.min() > 0 and lower > 0.25, (task, scores)
        sds.append(scores.std(ddof=1))
        ns.append(n)
    n = min(ns)
    sd = max(sds) * np.sqrt((n - 1) / stats.chi2.ppf(0.10, n - 1))  # 90 % upper bound
    assert min_detectable_drop(sd, n, n, rule.tolerance, rule.alpha, len(cells)) <= rule.catch
    # CI runs this gate with --fail-inconclusive: an inconclusive cell is an alarm too
    false_alarm, power = simulate(rule, len(cells), n, n, sd, drop=rule.catch,
                                  fail_inconclusive=True)
    assert false_alarm <= 0.05 and power >= 0.80


def test_an_unstable_new_sample_is_not_called_ok() -> None:
    """A broken learner's seeds scatter: its mean may fall without a significant test. The
    cell must then be inconclusive (failing CI's --fail-inconclusive), never "ok"."""
    rule = GateRule(catch=0.25)
    ref = np.array([[[-0.01, 0.01, 0.0, 0.02]]])
    new = np.array([[[-0.2, -0.3, -2.5, -0.1]]])  # mean −0.78 gap, SD ~1.2
    assert not alarms(new, ref, rule)[0, 0]  # the margin test alone does not reject
    assert alarms(new, ref, rule, fail_inconclusive=True)[0, 0]
    sd_ref, sd_new = ref.std(ddof=1), new.std(ddof=1)
    assert min_detectable_drop(sd_ref, 4, 4, 0.1, 0.05, 1, sd_new) > rule.catch
