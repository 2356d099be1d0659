"""What reports show with few runs: the bootstrap threshold and the coverage of what is shown."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from kaleibench.analysis import stats
from kaleibench.analysis.report import write_report
from kaleibench.analysis.synthetic import write_synthetic_results

MU, SIGMA = 0.5, 0.2  # normalised scores ~ N(0.5, 0.2) on every task


def _true_values() -> dict[str, float]:
    """Population mean and optimality gap (gamma = 1) of N(MU, SIGMA) scores."""
    z = (1.0 - MU) / SIGMA
    excess = SIGMA * sps.norm.pdf(z) - (1.0 - MU) * sps.norm.sf(z)  # E[(X - 1)+]
    return {"mean": MU, "optimality_gap": 1.0 - (MU - excess)}


def test_threshold_switches_between_bootstrap_and_small_n_intervals() -> None:
    rng = np.random.default_rng(0)
    five = {"a": rng.normal(MU, SIGMA, (5, 2)), "b": rng.normal(MU, SIGMA, (5, 2))}
    four = {**five, "b": five["b"][:4]}  # one variant below the threshold decides for all
    assert stats.MIN_BOOTSTRAP_N == 5
    assert stats.bootstrap_applies(five) and not stats.bootstrap_applies(four)
    shown = stats.report_aggregate_intervals(five, seed=0, reps=300)
    assert shown == stats.aggregate_intervals(five, seed=0, reps=300)
    small = stats.report_aggregate_intervals(four, seed=0, reps=300)
    for v in four:
        assert small[v]["iqm"].point == stats.iqm(four[v])
        assert not small[v]["iqm"].has_bounds and not small[v]["median"].has_bounds
        assert small[v]["mean"].has_bounds and small[v]["optimality_gap"].has_bounds
    # known answer: runs' task-averaged scores of "b" are a t-interval on 3 dof
    row_means = four["b"].mean(axis=1)
    low, high = sps.t.interval(0.95, 3, loc=row_means.mean(), scale=sps.sem(row_means))
    assert (small["b"]["mean"].low, small["b"]["mean"].high) == pytest.approx((low, high))
    assert small["b"]["mean"].format() == stats.Interval(row_means.mean(), low, high).format()
    poi = stats.report_poi_against(four, "a", seed=0, reps=300)
    assert poi["b"].point == stats.probability_of_improvement(four["b"], four["a"])
    assert not poi["b"].has_bounds
    assert stats.report_poi_against(five, "a", seed=0, reps=300)["b"].has_bounds


@pytest.mark.parametrize("n_tasks", [1, 5])
def test_what_is_shown_at_small_n_keeps_its_coverage(n_tasks: int) -> None:
    """Simulated coverage of the intervals a report shows, and false ‡ marks under H0.

    With 2 and 3 runs, every interval shown covers the truth about 95% of the time and no
    "excludes 0.5" mark is shown for identical variants; the percentile bootstrap that would
    otherwise be shown covers far less (50-85%) and marks ‡ up to a third of the time.
    """
    rng = np.random.default_rng(2026)
    truth, n_data = _true_values(), 300
    for n in (2, 3):
        hits = {m: 0 for m in truth}
        boot_hits, false_marks, boot_false_marks = 0, 0, 0
        for _ in range(n_data):
            data = {
                "x": rng.normal(MU, SIGMA, (n, n_tasks)),
                "y": rng.normal(MU, SIGMA, (n, n_tasks)),
            }
            shown = stats.report_aggregate_intervals(data, seed=0, reps=400)["x"]
            for m, value in truth.items():
                hits[m] += shown[m].low <= value <= shown[m].high
            poi = stats.report_poi_against(data, "y", seed=0, reps=400)["x"]
            false_marks += poi.low > 0.5 or poi.high < 0.5
            boot = stats.aggregate_intervals(data, seed=0, reps=400, metrics=("mean",))["x"]
            boot_hits += boot["mean"].low <= MU <= boot["mean"].high
            boot_poi = stats.poi_interval(data["x"], data["y"], rng, reps=400)
            boot_false_marks += boot_poi.low > 0.5 or boot_poi.high < 0.5
        for m in truth:  # binomial SE of a 95% rate over 300 data sets is 1.3 points
            assert 0.90 <= hits[m] / n_data <= 0.99, (n, m, hits[m] / n_data)
        assert false_marks == 0
        assert boot_hits / n_data < 0.87, (n, boot_hits / n_data)  # why it is not shown
        if n_tasks == 1:
            assert boot_false_marks / n_data > 0.15, (n, boot_false_marks / n_data)


def test_small_n_report_shows_no_bootstrap_intervals(tmp_path: Path) -> None:
    root = write_synthetic_results(tmp_path / "s", seeds=(0, 1))
    out = tmp_path / "report"
    text = write_report(root, out, seed=0, reps=300).read_text()
    agg_md = (out / "tables" / "aggregate.md").read_text()
    caption = agg_md.splitlines()[0]
    assert "fewer than 5 runs" in caption and "n = 2" in caption
    assert "percentile-bootstrap" in caption and "Student-t" in caption
    assert "‡" not in agg_md.split("\n", 1)[1]  # no mark in the table body
    with open(out / "tables" / "aggregate.csv", newline="", encoding="utf-8") as handle:
        rows = {r["variant"]: r for r in csv.DictReader(handle)}
    kalei = rows["kalei-qmix"]
    assert math.isnan(float(kalei["iqm_lo"])) and math.isnan(float(kalei["poi_lo"]))
    assert float(kalei["mean_lo"]) < float(kalei["mean"]) < float(kalei["mean_hi"])
    for stem in ("aggregate_intervals", "performance_profile", "poi", "curves_suite_iqm"):
        assert (out / "figures" / f"{stem}.png").exists()
    assert text.count("fewer than 5 runs") >= 4  # table and figure captions say why
