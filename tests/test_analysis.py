"""Results loading, completeness, curves, report and marl-eval export on synthetic folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kaleibench.analysis import curves, scores
from kaleibench.analysis.export import export_marl_eval
from kaleibench.analysis.report import analyse, write_report
from kaleibench.analysis.synthetic import write_synthetic_results


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    """2 variants x 2 tasks x 3 seeds, complete."""
    return write_synthetic_results(tmp_path / "smoke")


def _run_dir(root: Path, variant: str, task: str, seed: int) -> Path:
    return root / variant / scores.task_slug(task) / f"seed_{seed}"


def test_score_matrices_shape_and_fixed_normalisation(results_dir: Path) -> None:
    results = scores.load_results(results_dir)
    mats = scores.score_matrices(results)
    assert set(mats) == {"qmix", "kalei-qmix"}
    assert mats["qmix"].shape == (3, 2)
    final = json.loads((_run_dir(results_dir, "qmix", "mpe/tag-v0", 1) / "final.json").read_text())
    # tag bounds are random 0, reference 50
    assert mats["qmix"][1, 1] == pytest.approx(final["final_return"] / 50.0)
    raw = scores.score_matrices(results, normalised=False, variants=["qmix"])
    assert raw["qmix"][1, 1] == final["final_return"]


def test_completeness_names_missing_and_failed_cells(results_dir: Path) -> None:
    import shutil

    shutil.rmtree(_run_dir(results_dir, "qmix", "mpe/tag-v0", 2))
    failed = _run_dir(results_dir, "kalei-qmix", "mpe/spread-v0", 0)
    (failed / "final.json").unlink()
    (failed / "status.json").write_text(json.dumps({"state": "failed", "error": "NaN loss"}))
    results = scores.load_results(results_dir)
    report = scores.check_completeness(results)
    assert not report.complete
    text = report.describe()
    assert "qmix / mpe/tag-v0 / seed 2 (absent)" in text
    assert "kalei-qmix / mpe/spread-v0 / seed 0 (failed: NaN loss)" in text
    with pytest.raises(scores.IncompleteResultsError, match="seed 2"):
        scores.require_complete(results)
    assert scores.require_complete(results, allow_incomplete=True).missing == report.missing
    clean, tasks = scores.aggregate_view(scores.score_matrices(results), results.suite.task_ids)
    assert tasks == ["mpe/spread-v0", "mpe/tag-v0"]
    assert clean["qmix"].shape == (2, 2) and clean["kalei-qmix"].shape == (2, 2)


def test_not_applicable_cells_are_not_missing(tmp_path: Path) -> None:
    root = write_synthetic_results(
        tmp_path / "s", variants=("qmix", "alma"), not_applicable=[("alma", "mpe/tag-v0")]
    )
    results = scores.load_results(root)
    report = scores.check_completeness(results)
    assert report.complete and report.not_applicable == (("alma", "mpe/tag-v0"),)
    clean, tasks = scores.aggregate_view(scores.score_matrices(results), results.suite.task_ids)
    assert tasks == ["mpe/spread-v0"] and clean["alma"].shape == (3, 1)


def test_torn_metrics_line_is_ignored_with_warning(results_dir: Path) -> None:
    run = _run_dir(results_dir, "qmix", "mpe/spread-v0", 0)
    results = scores.load_results(results_dir)
    before = curves.cell_curve(results, "qmix", "mpe/spread-v0")
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"kind": "eval", "t_env": 2000, "return_mean": 1e9, "ret')
    with pytest.warns(UserWarning, match="torn last line"):
        rows = curves.read_metrics(run)
    assert all(r.get("return_mean") != 1e9 for r in rows)
    after = curves.cell_curve(results, "qmix", "mpe/spread-v0")
    assert before is not None and after is not None
    np.testing.assert_array_equal(before.values, after.values)


def test_task_and_suite_curves(results_dir: Path) -> None:
    results = scores.load_results(results_dir)
    curve = curves.cell_curve(results, "kalei-qmix", "mpe/tag-v0")
    assert curve is not None and curve.values.shape == (3, 5) and curve.seeds == (0, 1, 2)
    mean, low, high = curve.summary()
    assert np.all(low <= mean) and np.all(mean <= high)
    steps, band = curves.suite_iqm_curve(results, "qmix", results.suite.task_ids, seed=0, reps=200)
    assert steps.tolist() == [0, 250, 500, 750, 1000] and band.shape == (3, 5)
    assert band[0, -1] > band[0, 0]  # the synthetic curves learn
    assert curves.metric_keys(results, curves.KALEI_PREFIXES) == [
        "div_coef", "div_loss", "mask_distance", "n_reset", "sparsity/fc1",
    ]  # fmt: skip


def test_report_writes_tables_figures_and_captions(tmp_path: Path) -> None:
    # 5 seeds: enough runs for bootstrap intervals (stats.MIN_BOOTSTRAP_N)
    results_dir = write_synthetic_results(tmp_path / "smoke", seeds=range(5))
    out = tmp_path / "report"
    path = write_report(results_dir, out, baseline="qmix", seed=3, reps=500)
    text = path.read_text()
    for stem in ("curves_per_task", "curves_suite_iqm", "aggregate_intervals",
                 "performance_profile", "poi", "kalei_diagnostics"):  # fmt: skip
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 1000, (stem, ext)
        assert f"figures/{stem}.png" in text
    # every figure sits under its own heading: the replays section placed after the per-task
    # curves must not swallow the figures that follow it
    lines = text.splitlines()
    assert "### Replays" in lines
    for stem in ("curves_per_task", "curves_suite_iqm", "aggregate_intervals"):
        heading = lines[lines.index(f"![{stem}](figures/{stem}.png)") - 2]
        assert heading.startswith("### ") and heading != "### Replays", (stem, heading)
    assert not (out / "figures" / "alma_allocation.png").exists()  # no alloc/ metrics
    assert "## Variants" in text and "| qmix |" in text and "CPU s / run" in text
    for name in ("aggregate", "per_task"):
        for ext in ("md", "tex", "csv", "caption.txt"):
            assert (out / "tables" / f"{name}.{ext}").exists()
    agg_md = (out / "tables" / "aggregate.md").read_text()
    assert "n = 5 seeds per variant" in agg_md and "stratified percentile bootstrap" in agg_md
    assert "500 reps, seed 3" in agg_md and "**" in agg_md  # best in bold
    assert "Student-t" in (out / "tables" / "per_task.md").read_text()
    tex = (out / "tables" / "aggregate.tex").read_text()
    assert r"\textbf{" in tex and r"\caption{" in tex and "n = 5 seeds" in tex
    _check_numeric_csvs(out / "tables", n=5)
    assert not list(out.rglob("*.tmp"))


def _check_numeric_csvs(table_dir: Path, n: int) -> None:
    """Every CSV parses; its numeric columns are floats; a caption sidecar names n and method."""
    import csv

    with open(table_dir / "per_task.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["variant", "task", "status", "n", "mean", "lo", "hi",
                             "welch_p_holm", "mwu_p_holm"]  # fmt: skip
    assert len(rows) == 4  # 2 variants x 2 tasks, long format
    for row in rows:
        assert row["status"] == "ok" and float(row["n"]) == n
        mean, lo, hi = (float(row[k]) for k in ("mean", "lo", "hi"))
        assert lo <= mean <= hi
    kalei = [r for r in rows if r["variant"] == "kalei-qmix"]
    assert all(0 <= float(r["welch_p_holm"]) <= 1 for r in kalei)
    assert all(r["welch_p_holm"] == "nan" for r in rows if r["variant"] == "qmix")
    with open(table_dir / "aggregate.csv", newline="", encoding="utf-8") as handle:
        agg = list(csv.DictReader(handle))
    assert [r["variant"] for r in agg] == ["qmix", "kalei-qmix"]
    for row in agg:
        numbers = {k: float(v) for k, v in row.items() if k != "variant"}  # all parse
        assert numbers["n"] == n and numbers["iqm_lo"] <= numbers["iqm"] <= numbers["iqm_hi"]
    assert "poi" in agg[1] and agg[0]["poi"] == "nan"  # the baseline has no POI against itself
    for name in ("per_task", "aggregate"):
        caption = (table_dir / f"{name}.caption.txt").read_text()
        assert f"n = {n}" in caption and "CSV columns:" in caption
    assert "Student-t" in (table_dir / "per_task.caption.txt").read_text()


def test_report_rerun_overwrites(results_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    path = write_report(results_dir, out, seed=1, reps=200, figures=False)
    text = path.read_text()
    assert "Figures" not in text and "P(X > qmix)" in text
    (out / "tables" / "aggregate.md").write_text("stale content\n" * 100)
    assert write_report(results_dir, out, seed=1, reps=200, figures=False) == path
    assert path.read_text() == text  # same seed -> identical report, not appended
    assert "stale" not in (out / "tables" / "aggregate.md").read_text()
    assert not list(out.rglob("*.tmp"))


def test_report_refuses_incomplete_grid_unless_allowed(results_dir: Path, tmp_path: Path) -> None:
    (_run_dir(results_dir, "qmix", "mpe/tag-v0", 1) / "final.json").unlink()
    with pytest.raises(scores.IncompleteResultsError, match="qmix / mpe/tag-v0 / seed 1"):
        write_report(results_dir, tmp_path / "r", reps=200, figures=False)
    path = write_report(results_dir, tmp_path / "r", reps=200, allow_incomplete=True, figures=False)
    text = path.read_text()
    assert "Incomplete grid" in text and "qmix / mpe/tag-v0 / seed 1" in text
    assert "n seeds per variant: qmix 2, kalei-qmix 3" in text


def test_report_on_a_grid_where_no_run_has_finished(results_dir: Path, tmp_path: Path) -> None:
    import shutil

    for run in results_dir.glob("*/*/seed_*"):
        if run.parts[-3] == "kalei-qmix":
            shutil.rmtree(run)  # not started
        else:
            (run / "final.json").unlink()
            (run / "status.json").write_text(json.dumps({"state": "running"}))
    text = write_report(results_dir, tmp_path / "r", reps=200, allow_incomplete=True,
                        figures=False).read_text()
    assert "Aggregates skipped: no run has a final score yet." in text
    assert "n = 0 (no run has finished yet) seeds per cell" in text
    assert "| kalei-qmix | – | (no run started) | 0 |" in text
    assert "- Grid: 2 variants × 2 tasks × 3 seeds;" in text


def test_report_rejects_unknown_baseline(results_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="baseline 'vdn'"):
        write_report(results_dir, tmp_path / "r", baseline="vdn", reps=100)


def test_export_marl_eval_schema(results_dir: Path, tmp_path: Path) -> None:
    out = export_marl_eval(results_dir, tmp_path / "marl_eval.json")
    data = json.loads(out.read_text())
    assert list(data) == ["mpe"] and sorted(data["mpe"]) == ["spread-v0", "tag-v0"]
    runs = data["mpe"]["spread-v0"]["qmix"]
    assert sorted(runs) == ["run_0", "run_1", "run_2"]
    run = runs["run_1"]
    assert run["step_0"]["step_count"] == 0 and run["step_4"]["step_count"] == 1000
    assert len(run["step_4"]["return"]) == 4
    final = json.loads(
        (_run_dir(results_dir, "qmix", "mpe/spread-v0", 1) / "final.json").read_text()
    )
    assert run["absolute_metrics"]["return"] == final["absolute_returns"]
    assert np.mean(run["step_4"]["return"]) == pytest.approx(final["final_return"])


def test_report_without_suite_json_skips_aggregates(results_dir: Path, tmp_path: Path) -> None:
    (results_dir / "suite.json").unlink()  # grid inferred from folders, no bounds
    results = scores.load_results(results_dir)
    assert results.suite.task_ids == ["mpe/spread-v0", "mpe/tag-v0"]
    assert set(results.suite.variants) == {"qmix", "kalei-qmix"} and not results.suite.has_bounds
    text = write_report(results_dir, tmp_path / "r", reps=100, figures=False).read_text()
    assert "Aggregates skipped" in text and "per_task" in text
    assert not (tmp_path / "r" / "tables" / "aggregate.md").exists()


def test_per_agent_scores_are_normalised_with_per_agent_bounds(results_dir: Path) -> None:
    results = scores.load_results(results_dir)
    team = scores.score_matrices(results, "final", normalised=True)
    per_agent = scores.score_matrices(results, "final_per_agent", normalised=True)
    # per-agent return = team / 3 and bounds / 3: the same normalised score
    for v in team:
        np.testing.assert_allclose(per_agent[v], team[v], rtol=1e-12)
    raw = scores.score_matrices(results, "final_per_agent", normalised=False)
    assert raw["qmix"][0, 0] == pytest.approx(
        scores.score_matrices(results, "final", normalised=False)["qmix"][0, 0] / 3
    )
    cell = scores.cell_scores(results, "qmix", "mpe/spread-v0", "absolute_per_agent", True)
    team_cell = scores.cell_scores(results, "qmix", "mpe/spread-v0", "absolute", True)
    np.testing.assert_allclose(cell, team_cell, rtol=1e-12)


def test_per_agent_normalisation_without_n_agents_raises(results_dir: Path) -> None:
    final_path = _run_dir(results_dir, "qmix", "mpe/tag-v0", 1) / "final.json"
    final = json.loads(final_path.read_text())
    del final["n_agents"]
    final_path.write_text(json.dumps(final))
    results = scores.load_results(results_dir)
    with pytest.raises(ValueError, match="n_agents"):
        scores.score_matrices(results, "final_per_agent", normalised=True)
    scores.score_matrices(results, "final", normalised=True)  # team scores need no n_agents


def test_report_modules_import_one_way() -> None:
    """report imports report_render; report_render never imports report (no import cycle)."""
    import ast

    import kaleibench.analysis.report_render as render

    tree = ast.parse(Path(render.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "kaleibench.analysis.report" not in imported
    from kaleibench.analysis import report

    assert report.Analysis is render.Analysis


def test_task_caption_counts_only_testable_comparisons(results_dir: Path, tmp_path: Path) -> None:
    # tag: every seed of both variants scores the same value -> Welch untestable there
    for variant, value in (("qmix", 10.0), ("kalei-qmix", 40.0)):
        for seed in (0, 1, 2):
            path = _run_dir(results_dir, variant, "mpe/tag-v0", seed) / "final.json"
            final = json.loads(path.read_text())
            path.write_text(json.dumps({**final, "final_return": value}))
    out = tmp_path / "r"
    write_report(results_dir, out, reps=100, figures=False)
    md = (out / "tables" / "per_task.md").read_text()
    caption = md.splitlines()[0]
    assert "over 1 Welch and 2 Mann-Whitney comparisons" in caption
    assert "1 comparison(s) could not be tested" in caption
    tag_row = next(line for line in md.splitlines() if line.startswith("| kalei-qmix"))
    tag_cell = tag_row.split("|")[3]
    assert "\\*" not in tag_cell  # no Welch mark from p = 0 on zero variance


def test_incomplete_grid_aggregates_leave_out_unfinished_variants(tmp_path: Path) -> None:
    """A variant with no finished run on some task is left out of the aggregates (named),
    instead of shrinking the others' aggregates to the tasks it has or cancelling them."""
    tasks = {"mpe/spread-v0": (-200.0, -100.0), "mpe/tag-v0": (0.0, 10.0)}
    root = write_synthetic_results(tmp_path / "s", variants=("qmix", "kalei-qmix", "alma"),
                                   tasks=tasks, seeds=(0, 1, 2),
                                   skills=(0.3, 0.6, 0.6))  # fmt: skip
    for seed in (0, 1, 2):  # alma has not finished tag yet; kalei-qmix lacks one seed there
        shutil.rmtree(root / "alma" / "mpe__tag-v0" / f"seed_{seed}")
    shutil.rmtree(root / "kalei-qmix" / "mpe__tag-v0" / "seed_2")
    a = analyse(root, baseline="qmix", reps=200, allow_incomplete=True)
    assert a.agg_left_out == ["alma"] and set(a.agg_scores) == {"qmix", "kalei-qmix"}
    assert a.agg_tasks == list(tasks)  # both tasks, not only the one alma finished
    assert a.agg_scores["kalei-qmix"].shape == (2, 2)
    text = write_report(root, tmp_path / "out", baseline="qmix", reps=200,
                        allow_incomplete=True).read_text()
    assert "Aggregates leave out alma" in text and "Left out (incomplete grid" in text
    # an unfinished baseline keeps the old rule: every variant, on the tasks all share
    b = analyse(root, baseline="alma", reps=200, allow_incomplete=True)
    assert b.agg_left_out == [] and b.agg_tasks == ["mpe/spread-v0"]


def test_diagnostic_figures_put_one_metric_per_row_and_one_task_per_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # alma logs alloc/ metrics only on spread (n/a on tag): its figure gets one column, no
    # empty frames; kalei's two tasks stay aligned, row = metric, column = task
    from kaleibench.analysis import report_render

    root = write_synthetic_results(tmp_path / "s", variants=("qmix", "kalei-qmix", "alma"),
                                   not_applicable=[("alma", "mpe/tag-v0")])  # fmt: skip
    saved: dict[str, object] = {}
    real_save = report_render.plots.save_figure

    def capture(fig, out_dir, stem):  # type: ignore[no-untyped-def]
        saved[stem] = [(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start,
                        ax.get_ylabel(), ax.get_title())
                       for ax in fig.axes if ax.get_visible() and ax.get_subplotspec()]
        return real_save(fig, out_dir, stem)

    monkeypatch.setattr(report_render.plots, "save_figure", capture)
    write_report(root, tmp_path / "report", baseline="qmix", seed=0, reps=200)
    kalei = curves.metric_keys(scores.load_results(root), curves.KALEI_PREFIXES)
    tasks = ["mpe/spread-v0", "mpe/tag-v0"]
    assert len(kalei) > 2  # more metrics than tasks: a wrapped layout would misalign them
    assert saved["kalei_diagnostics"] == [
        (row, col, key, task) for row, key in enumerate(kalei) for col, task in enumerate(tasks)
    ]
    assert saved["alma_allocation"] == [(0, 0, "alloc/changes", "mpe/spread-v0"),
                                        (1, 0, "alloc/entropy", "mpe/spread-v0")]  # fmt: skip


def test_task_caption_says_when_no_mann_whitney_mark_can_occur(tmp_path: Path) -> None:
    # 3 vs 3 seeds: the exact test's smallest p is 0.1, so a missing mark says nothing
    few = write_synthetic_results(tmp_path / "few", seeds=(0, 1, 2))
    write_report(few, tmp_path / "r3", reps=100, figures=False)
    caption = (tmp_path / "r3" / "tables" / "per_task.md").read_text().splitlines()[0]
    assert ("no † can occur: the smallest possible two-sided Mann-Whitney p of 3 vs 3 seeds "
            "is 0.1 (2 of the 20 rank arrangements), and Holm needs p < 0.05/2") in caption
    many = write_synthetic_results(tmp_path / "many", seeds=range(6))  # 2 / 924 < 0.05 / 2
    write_report(many, tmp_path / "r6", reps=100, figures=False)
    caption = (tmp_path / "r6" / "tables" / "per_task.md").read_text().splitlines()[0]
    assert "can occur" not in caption and "Mann-Whitney" in caption


def test_latex_tables_are_ascii_with_math_marks(tmp_path: Path) -> None:
    # pdflatex without extra packages: no raw Unicode, no \text, < and > in math mode
    from kaleibench.analysis import tables

    table = tables.Table("t", "P(X > Y) ≥ 0.5 — n × 3, α 5 %; * / † / ‡ marks", ["Variant", "a"],
                         [["qmix", "1.0 [0.5, 1.5]"], ["alma", "−2"]],
                         marks={(0, 1): "*†", (1, 1): "‡"})  # fmt: skip
    tex = tables.to_latex(table)
    assert tex.isascii(), [ch for ch in tex if not ch.isascii()]
    assert r"1.0 [0.5, 1.5]$^{*\dagger}$" in tex and r"$-$2$^{\ddagger}$" in tex
    assert r"P(X $>$ Y) $\geq$ 0.5 --- n $\times$ 3, $\alpha$ 5 \%" in tex
    assert r"\text{" not in tex
    root = write_synthetic_results(tmp_path / "s", seeds=range(5))
    write_report(root, tmp_path / "r", reps=100, figures=False)
    for name in ("aggregate", "per_task"):
        assert (tmp_path / "r" / "tables" / f"{name}.tex").read_text().isascii(), name


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_tables_compile_with_pdflatex(tmp_path: Path) -> None:
    import subprocess

    root = write_synthetic_results(tmp_path / "s", seeds=range(5), skills=(0.3, 0.9))
    write_report(root, tmp_path / "r", reps=100, figures=False)
    tex = tmp_path / "r" / "tables" / "per_task.tex"
    assert "$^{*" in tex.read_text()  # a significance mark is part of what compiles
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                   "\\input{r/tables/aggregate.tex}\n\\input{r/tables/per_task.tex}\n"
                   "\\end{document}\n")  # fmt: skip
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_aggregate_panels_share_one_scale() -> None:
    """A panel of point estimates must not autoscale to its few points: every panel gets the
    widest panel's x span, centred on its own data."""
    from kaleibench.analysis.plots import equal_scale, new_figure, plot_intervals
    from kaleibench.analysis.stats import Interval

    nan = float("nan")
    intervals = {"a": {"iqm": Interval(0.40, nan, nan), "mean": Interval(0.4, -0.1, 0.8)},
                 "b": {"iqm": Interval(0.56, nan, nan), "mean": Interval(0.5, 0.4, 0.6)}}
    fig = new_figure(n_cols=2)
    for ax, metric in zip(fig.axes, ("iqm", "mean"), strict=True):
        plot_intervals(intervals, metric, ax=ax)
    assert fig.axes[0].get_xlim()[1] - fig.axes[0].get_xlim()[0] < 0.3  # autoscaled
    equal_scale(fig.axes)
    (l0, h0), (l1, h1) = fig.axes[0].get_xlim(), fig.axes[1].get_xlim()
    assert h0 - l0 == pytest.approx(h1 - l1) and h1 - l1 >= 0.9
    assert l0 < 0.40 and h0 > 0.56 and l1 <= -0.1 and h1 >= 0.8
