"""Render an :class:`Analysis` (computed by ``report.analyse``) to tables, figures and report.md.

The dependency is one way: ``report`` imports this module, this module does not import
``report``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kaleibench.analysis import plots, stats, tables
from kaleibench.analysis import significance as sig
from kaleibench.analysis._io import atomic_write_text
from kaleibench.analysis.curves import (
    ALMA_PREFIXES,
    KALEI_PREFIXES,
    Curve,
    cell_curve,
    episode_return_range,
    metric_keys,
    suite_iqm_curve,
)
from kaleibench.analysis.headline import Headline, render_headline
from kaleibench.analysis.scores import Completeness, Results, cell_scores
from kaleibench.analysis.significance import T_CI_METHOD
from kaleibench.analysis.variant_table import variant_lines


@dataclass(frozen=True)
class Analysis:
    """Everything the report shows, computed once by :func:`analyse`."""

    results: Results
    completeness: Completeness
    baseline: str
    kind: str
    seed: int
    reps: int
    confidence: float
    alpha: float
    agg_scores: dict[str, np.ndarray]
    agg_tasks: list[str]
    intervals: dict[str, dict[str, stats.Interval]]
    poi: dict[str, stats.Interval]
    profiles: dict[str, stats.Profile]
    task_cells: dict[tuple[str, str], stats.Interval | None]
    tests: list[sig.PairTest]
    headline: Headline | None = None
    headline_error: str = ""
    agg_left_out: list[str] = field(default_factory=list)
    """Variants of an incomplete grid left out of the aggregates (no finished run on a task)."""

    @property
    def variants(self) -> list[str]:
        """Variants of the suite, in suite order."""
        return list(self.results.suite.variants)

    @property
    def has_aggregates(self) -> bool:
        """Whether across-task aggregates could be computed."""
        return bool(self.intervals)

    def seeds_phrase(self, counts: dict[str, int] | None = None) -> str:
        """``"n = 3 seeds per variant"``, or the count per variant when they differ."""
        counts = counts or {v: s.shape[0] for v, s in self.agg_scores.items()}
        if not counts:
            counts = {v: len(self.results.suite.seeds) for v in self.variants}
        if len(set(counts.values())) == 1:
            return f"n = {next(iter(counts.values()))} seeds per variant"
        return "n seeds per variant: " + ", ".join(f"{v} {n}" for v, n in counts.items())

    def cell_counts(self) -> dict[tuple[str, str], int]:
        """Completed seeds of every applicable (variant, task) cell."""
        return {
            (v, t): cell_scores(self.results, v, t, self.kind).size
            for (v, t), iv in self.task_cells.items()
            if iv is not None
        }

    @property
    def styles(self) -> dict[str, plots.Style]:
        """One colour/line style per variant of the suite, the same in every figure."""
        return plots.variant_styles(self.variants)

    @property
    def small_n(self) -> bool:
        """Whether some variant has fewer than ``stats.MIN_BOOTSTRAP_N`` runs in the aggregates.

        Then no percentile-bootstrap interval or POI mark is shown (see the captions).
        """
        return self.has_aggregates and not stats.bootstrap_applies(self.agg_scores)

    def min_runs(self) -> int:
        """Fewest runs of any variant in the aggregates."""
        return min((s.shape[0] for s in self.agg_scores.values()), default=0)

    def small_n_reason(self) -> str:
        """Caption sentence explaining why small-n reports show no bootstrap intervals."""
        return (
            f"With fewer than {stats.MIN_BOOTSTRAP_N} runs per variant (here n = "
            f"{self.min_runs()}) a nominal 95% percentile-bootstrap interval covers far less "
            "than 95% (simulated on one task: about 50% at n = 2, where it is just the range of "
            "the two runs, and 73% at n = 3), so none is shown"
        )

    def bootstrap_phrase(self, reps: int | None = None) -> str:
        """CI method, reps and seed, for captions."""
        return f"{stats.CI_METHOD} CI ({reps or self.reps} reps, seed {self.seed})"


@dataclass(frozen=True)
class Figure:
    """A written figure: its stem (``figures/<stem>.png``) and caption."""

    stem: str
    caption: str

    @property
    def title(self) -> str:
        """The figure's section heading in report.md."""
        return FIGURE_TITLES.get(self.stem, self.stem.replace("_", " ").capitalize())


# Each figure gets its own heading, so that a section placed between figures (the replays
# follow the per-task curves) does not swallow the figures after it in the outline.
FIGURE_TITLES = {
    "curves_per_task": "Learning curves per task",
    "curves_suite_iqm": "Learning curve over the suite (IQM)",
    "aggregate_intervals": "Aggregate scores",
    "performance_profile": "Performance profile",
    "poi": "Probability of improvement",
    "kalei_diagnostics": "Kalei-QMIX diagnostics",
    "alma_allocation": "ALMA allocation",
}


def _aggregate_caption(a: Analysis) -> str:
    excluded = [t for t in a.results.suite.task_ids if t not in a.agg_tasks]
    bounds = (
        "Normalised score = (return - random) / (reference - random) with the suite's fixed "
        "bounds. Best per column in bold"
    )
    if a.small_n:
        text = (
            f"Aggregate normalised {a.kind} score over {len(a.agg_tasks)} task(s); "
            f"{a.seeds_phrase()}. {a.small_n_reason()}. Shown instead: a "
            f"{stats.SMALL_N_METHOD}; so no {tables.POI_MARK} marks. {bounds}."
        )
    else:
        text = (
            f"Aggregate normalised {a.kind} score over {len(a.agg_tasks)} task(s); "
            f"{a.seeds_phrase()}; point estimate and {a.bootstrap_phrase()}. {bounds}; "
            f"{tables.POI_MARK}: the P(X > {a.baseline}) interval excludes 0.5. Percentile "
            "bootstrap intervals are still somewhat narrow with few runs (simulated coverage "
            "about 86-91% at n = 5, 90-94% at n = 10)."
        )
    if excluded:
        text += f" Tasks excluded as N/A for some variant: {', '.join(excluded)}."
    if a.agg_left_out:
        text += (f" Left out (incomplete grid, no finished run yet on some task): "
                 f"{', '.join(a.agg_left_out)}.")
    return text


def _task_caption(a: Analysis) -> str:
    n_welch, n_mwu = sig.n_testable(a.tests)
    untestable = len(a.tests) - min(n_welch, n_mwu)
    family = (
        f"over {n_welch} comparisons"
        if n_welch == n_mwu
        else f"over {n_welch} Welch and {n_mwu} Mann-Whitney comparisons"
    )
    if not a.tests:
        family = "(no comparison: one variant)"
    sizes = sorted({n for n in a.cell_counts().values()})
    if not sizes:
        seeds = "n = 0 (no run has finished yet)"
    else:
        seeds = f"n = {sizes[0]}" if len(sizes) == 1 else f"n = {sizes[0]} to {sizes[-1]}"
    text = (
        f"Per-task {a.kind} team return: mean over seeds with {T_CI_METHOD} (n - 1 dof, real n "
        f"per cell; no bootstrap, so no reps or seed); {seeds} seeds per cell. Best per task "
        f"in bold; {tables.WELCH_MARK} / {tables.MWU_MARK}: two-sided Welch t / Mann-Whitney U "
        f"vs {a.baseline} (Mann-Whitney p exact, ties included, for up to "
        f"{sig.MWU_PERMUTATION_MAX_N} seeds in a pair), Holm-Bonferroni-corrected {family}, "
        f"p < {a.alpha}."
    )
    if n_mwu and not sig.mwu_mark_possible(a.tests, a.alpha):
        n_a, n_b = min(((t.n_variant, t.n_other) for t in a.tests if math.isfinite(t.mwu_p)),
                       key=lambda n: sig.mwu_smallest_p(*n))  # the least hopeless pair
        text += (
            f" At these seed counts no {tables.MWU_MARK} can occur: the smallest possible "
            f"two-sided Mann-Whitney p of {n_a} vs {n_b} seeds is "
            f"{sig.mwu_smallest_p(n_a, n_b):.3g} (2 of the {math.comb(n_a + n_b, n_a)} rank "
            f"arrangements), and Holm needs p < {a.alpha}/{n_mwu} for the first rejection."
        )
    if untestable:
        text += (
            f" {untestable} comparison(s) could not be tested (fewer than 2 seeds, or no "
            "variance on either side) and carry no mark."
        )
    return text + " N/A: the variant cannot run on the task."


def write_tables(a: Analysis, out: Path) -> list[tables.Table]:
    """Write the aggregate and per-task tables (MD/LaTeX/CSV) under ``out/tables``."""
    written = []
    if a.has_aggregates:
        n_runs = {v: m.shape[0] for v, m in a.agg_scores.items()}
        agg = tables.aggregate_table(
            a.intervals, a.poi, a.baseline, _aggregate_caption(a), n_runs=n_runs
        )
        written.append(agg)
    tasks = a.results.suite.task_ids
    per_task = tables.task_table(
        a.task_cells, a.variants, tasks, a.tests, _task_caption(a), a.alpha,
        counts=a.cell_counts(),
    )  # fmt: skip
    written.append(per_task)
    for table in written:
        tables.write_table(table, out / "tables")
    return written


_N_NOTE = "n in the legend: seeds per point, a range such as n=1–3 while runs are in progress"
_BAND_NOTE = (
    f"where fewer than {plots.MIN_BAND_SEEDS} seeds have reached a step, a variant's seeds are "
    "drawn as thin lines instead of a band (a 2-seed t-interval is the mean ± 12.7 standard "
    "errors); the y axis spans the seeds' values, so a wider band runs out of the frame"
)


CURVE_COLUMNS = 3
"""Tasks per row of the per-task curves figure (a suite of 7 tasks reads as 3 rows)."""


def _curve_figures(a: Analysis, fig_dir: Path) -> list[Figure]:
    tasks = a.results.suite.task_ids
    styles = a.styles
    n_cols = min(len(tasks), CURVE_COLUMNS)
    fig = plots.new_figure(n_cols=n_cols, n_rows=-(-len(tasks) // n_cols), size=(4.5, 3.2))
    for ax in fig.axes[len(tasks):]:
        ax.set_visible(False)
    ranges = []
    for ax, task in zip(fig.axes, tasks, strict=False):
        curves = {v: c for v in a.variants if (c := cell_curve(a.results, v, task)) is not None}
        low, high = episode_return_range(a.results, list(curves), task)
        ranges.append(f"{task} [{low:.4g}, {high:.4g}]")
        plots.plot_curves(curves, title=task, ylabel="team return", ax=ax, styles=styles,
                          clip=(low, high))  # fmt: skip
    plots.save_figure(fig, fig_dir, "curves_per_task")
    out = [
        Figure(
            "curves_per_task",
            f"Evaluation team return during training per task: mean over seeds with a shaded "
            f"{T_CI_METHOD} at each eval step ({_N_NOTE}; no bootstrap, so no reps or seed). "
            "Bands are clipped to the range of single-episode eval returns observed on "
            f"the task over all variants, seeds, steps and episodes ({'; '.join(ranges)}): a "
            "seed's score is a mean of such returns, so no mean can leave that range, while "
            f"the t quantile at small n can; {_BAND_NOTE}.",
        )
    ]
    if a.has_aggregates:
        bands = {
            v: suite_iqm_curve(a.results, v, a.agg_tasks, a.seed, min(a.reps, 2_000))
            for v in a.variants if v in a.agg_scores
        }
        if a.small_n:  # keep the IQM line, drop the bootstrap band
            bands = {v: (t, np.stack([e[0], e[0] * np.nan, e[0] * np.nan]))
                     for v, (t, e) in bands.items()}  # fmt: skip
            band = f"no band. {a.small_n_reason()}."
        else:
            band = f"band: {a.bootstrap_phrase(min(a.reps, 2_000))}."
        fig = plots.new_figure(size=(5.5, 3.5))
        plots.plot_band(bands, title="Suite IQM", ax=fig.axes[0], styles=styles)
        plots.save_figure(fig, fig_dir, "curves_suite_iqm")
        caption = (
            f"IQM of normalised eval return across runs and {len(a.agg_tasks)} task(s) during "
            f"training; {a.seeds_phrase()}; {band}"
        )
        out.append(Figure("curves_suite_iqm", caption))
    return out


def _aggregate_figures(a: Analysis, fig_dir: Path) -> list[Figure]:
    metrics = list(next(iter(a.intervals.values())))
    styles = a.styles
    fig = plots.new_figure(n_cols=len(metrics), size=(3.2, 0.5 * len(a.variants) + 1.2))
    for ax, metric in zip(fig.axes, metrics, strict=True):
        plots.plot_intervals(a.intervals, metric, ax=ax, styles=styles)
    plots.equal_scale(fig.axes)
    plots.save_figure(fig, fig_dir, "aggregate_intervals")
    fig = plots.new_figure(size=(5.5, 3.5))
    plots.plot_profiles(a.profiles, ax=fig.axes[0], styles=styles)
    plots.save_figure(fig, fig_dir, "performance_profile")
    side = max(4.8, 0.75 * len(a.variants) + 2.0)
    fig = plots.new_figure(n_cols=2, size=(side, max(3.2, 0.6 * len(a.variants) + 1.8)))
    plots.plot_poi_matrix(a.agg_scores, ax=fig.axes[0])
    plots.plot_poi_intervals(a.poi, a.baseline, ax=fig.axes[1], styles=styles)
    plots.save_figure(fig, fig_dir, "poi")
    profile_reps = min(a.reps, 2_000)
    if a.small_n:
        why = a.small_n_reason()
        return [
            Figure("aggregate_intervals", f"Aggregate normalised {a.kind} scores (dot: point "
                   f"estimate, bar: interval; all panels on one scale); {a.seeds_phrase()}. "
                   f"{why}. Shown instead: a {stats.SMALL_N_METHOD}."),
            Figure("performance_profile", "Performance profile (fraction of runs whose "
                   f"normalised score exceeds tau); {a.seeds_phrase()}; no bands. {why}."),
            Figure("poi", "Probability of improvement. Left: P(row > column) point estimates "
                   f"over all pairs. Right: P(X > {a.baseline}), point estimates only; "
                   f"{a.seeds_phrase()}. {why}."),
        ]  # fmt: skip
    return [
        Figure("aggregate_intervals", f"Aggregate normalised {a.kind} scores (dot: point "
               f"estimate, bar: interval; all panels on one scale); {a.seeds_phrase()}; "
               f"{a.bootstrap_phrase()}."),
        Figure("performance_profile", "Performance profile (fraction of runs whose normalised "
               f"score exceeds tau); {a.seeds_phrase()}; pointwise bands: "
               f"{a.bootstrap_phrase(profile_reps)}."),
        Figure("poi", "Probability of improvement. Left: P(row > column) point estimates over "
               f"all pairs. Right: P(X > {a.baseline}) with {a.bootstrap_phrase()} (X and "
               f"{a.baseline} resampled independently); {a.seeds_phrase()}."),
    ]  # fmt: skip


def _diagnostic_figure(
    a: Analysis, fig_dir: Path, prefixes: tuple[str, ...], stem: str, what: str
) -> list[Figure]:
    """One row per metric, one column per task that logged any of them.

    Rows and columns keep a metric's panels side by side across tasks, so that they read as a
    table; a task none of whose runs logs these metrics (e.g. one not yet started, or a variant
    family that does not run there) gets no column of empty frames.
    """
    keys = metric_keys(a.results, prefixes)
    if not keys:
        return []
    grid: dict[tuple[str, str], dict[str, Curve]] = {}
    for key in keys:
        for task in a.results.suite.task_ids:
            curves = {v: c for v in a.variants
                      if (c := cell_curve(a.results, v, task, key=key, kind="train",
                                          n_points=100)) is not None}  # fmt: skip
            if curves:
                grid[key, task] = curves
    tasks = [t for t in a.results.suite.task_ids if any(k[1] == t for k in grid)]
    fig = plots.new_figure(n_cols=len(tasks), n_rows=len(keys), size=(4.0, 2.8))
    for row, key in enumerate(keys):
        for col, task in enumerate(tasks):
            ax = fig.axes[row * len(tasks) + col]
            if (key, task) in grid:
                plots.plot_curves(grid[key, task], task, key, ax=ax, styles=a.styles)
            else:
                ax.set_visible(False)
    plots.save_figure(fig, fig_dir, stem)
    caption = (
        f"{what} from training logs, one row per metric ({', '.join(keys)}) and one column per "
        f"task: mean over seeds with a shaded {T_CI_METHOD} ({_N_NOTE}; no bootstrap, so no reps "
        f"or seed), clipped to the range of the values observed in each panel over "
        f"all variants and seeds; {_BAND_NOTE}."
    )
    return [Figure(stem, caption)]


def write_figures(a: Analysis, out: Path) -> list[Figure]:
    """Write every figure (PNG and PDF) under ``out/figures`` and return their captions."""
    fig_dir = out / "figures"
    figures = _curve_figures(a, fig_dir)
    if a.has_aggregates:
        figures += _aggregate_figures(a, fig_dir)
    figures += _diagnostic_figure(a, fig_dir, KALEI_PREFIXES, "kalei_diagnostics",
                                  "Kalei mask sparsity and diversity")  # fmt: skip
    figures += _diagnostic_figure(a, fig_dir, ALMA_PREFIXES, "alma_allocation",
                                  "ALMA allocation statistics")  # fmt: skip
    return figures


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _no_aggregates_reason(a: Analysis) -> str:
    """Why the across-task aggregates are missing, in the report's words."""
    if not a.results.suite.has_bounds:
        return "the suite declares no normalisation bounds"
    if not any(a.cell_counts().values()):
        return "no run has a final score yet"
    return ("some variant has no run with a final score on every task that all variants "
            "share")


def _provenance(a: Analysis) -> list[str]:
    suite = a.results.suite
    specs = [r.spec for r in a.results.runs.values() if r.spec]
    lines = [
        f"- Suite: `{suite.name}` version {suite.version}, hash `{suite.hash or 'n/a'}`",
        f"- Grid: {_plural(len(suite.variants), 'variant')} × "
        f"{_plural(len(suite.tasks), 'task')} × {_plural(len(suite.seeds), 'seed')}; t_max "
        f"{suite.t_max}, eval every {suite.eval_interval} steps on {suite.eval_episodes} episodes",
        f"- Score: `{a.kind}`; baseline for tests: `{a.baseline}`; bootstrap: {a.reps} reps, "
        f"seed {a.seed}, {int(a.confidence * 100)}% intervals",
    ]
    for key in ("platform", "python", "git_sha"):
        values = sorted({str(s.get(key)) for s in specs})
        if values:
            lines.append(f"- {key}: {', '.join(f'`{v}`' for v in values)}")
    return lines


def _completeness(a: Analysis) -> list[str]:
    c = a.completeness
    lines = ["## Completeness", ""]
    if c.complete:
        lines.append("All applicable runs completed.")
    else:
        lines.append(f"**Incomplete grid** (reported with allow_incomplete): {len(c.missing)} "
                     "run(s) have no final score and are excluded:")  # fmt: skip
        lines += [f"- {m}" for m in c.missing]
    if c.not_applicable:
        lines += ["", "Not applicable (shown as N/A): "
                  + ", ".join(f"{v} on {t}" for v, t in c.not_applicable)]  # fmt: skip
    return lines + [""]


def replay_lines(a: Analysis, out: Path) -> list[str]:
    """Write one replay GIF per (variant, task) under ``out/replays``; Markdown embedding them.

    Each GIF is the best seed's (by the report's score) best-evaluated policy playing greedily
    the episode with the median team return among the first fixed eval seeds; see
    :mod:`kaleibench.render`.
    """
    from kaleibench.analysis.scores import SCORE_KEYS
    from kaleibench.render import DEFAULT_SIZE, FPS, NO_POLICY, REPLAY_CANDIDATES, cell_replays

    replays = {(r.variant, r.task): r for r in cell_replays(a.results, SCORE_KEYS[a.kind],
                                                            out / "replays")}
    tasks = [t for t in a.results.suite.task_ids if any(k[1] == t for k in replays)]
    if not tasks:
        return []
    if all(r.error == NO_POLICY for r in replays.values()):
        return ["### Replays", "", "Replays skipped: no run in this folder keeps its policy "
                "files (results kept with scores and logs only).", ""]
    lines = ["### Replays", "", "| variant | " + " | ".join(tasks) + " |",
             "|---|" + "---|" * len(tasks)]
    for v in a.variants:
        cells = []
        for t in tasks:
            r = replays.get((v, t))
            if r is None:
                cells.append("N/A" if a.results.is_na(v, t) else "no completed run")
            elif r.gif is None:
                cells.append(f"no replay (seed {r.seed}: {r.error})".replace("|", "/"))
            else:
                kept = "<br>(kept from an earlier report: same policy file)" if r.kept else ""
                cells.append(f"![{v} on {t}](replays/{r.gif.name})<br>seed {r.seed}, "
                             f"episode {r.episode_seed}, return {r.team_return:.2f}{kept}")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    caption = (
        f"One greedy episode per cell of the best-evaluated policy (best.pt) of the training "
        f"seed with the highest {a.kind} score: of the first {REPLAY_CANDIDATES} fixed eval "
        "episodes, the one with the median team return (a typical episode, not a lucky or "
        f"unlucky one); one frame after reset and one per step, {FPS} fps, {DEFAULT_SIZE} px "
        "(files: `replays/<variant>__<task>.gif`, each with a `.json` naming the policy file "
        "by checksum, the seeds and the return). A run kept without its policy files (exported "
        "results, or a copy of them) reuses the GIF of an earlier report when that records the "
        "same policy checksum as the run's status.json."
    )
    return [*lines, "", f"*{caption}*", ""]


def render_report(a: Analysis, out: Path, figures: bool = True) -> Path:
    """Write tables, figures and replay GIFs (unless ``figures`` is False) and ``report.md``;
    return its path."""
    written = write_tables(a, out)
    figs = write_figures(a, out) if figures else []
    replays = replay_lines(a, out) if figures else []
    lines = [f"# kaleibench report: {a.results.suite.name}", "", *_provenance(a), ""]
    lines += _completeness(a)
    if a.headline is not None:
        lines += render_headline(a.headline)
    elif a.headline_error:
        lines += [f"Headline skipped: {a.headline_error}", ""]
    lines += variant_lines(a.results, a.variants)
    if not a.has_aggregates:
        lines += [f"Aggregates skipped: {_no_aggregates_reason(a)}.", ""]
    elif a.agg_left_out:
        lines += [f"Aggregates leave out {', '.join(a.agg_left_out)}: no finished run yet on "
                  "some task (incomplete grid).", ""]
    lines += ["## Tables", ""]
    for table in written:
        lines += [tables.to_markdown(table), f"Files: `tables/{table.name}.md`, "
                  f"`tables/{table.name}.tex`, `tables/{table.name}.csv` (numeric columns; "
                  f"caption in `tables/{table.name}.caption.txt`)", ""]  # fmt: skip
    lines += ["## Figures", ""] if figs else []
    for fig in figs:
        lines += [f"### {fig.title}", "", f"![{fig.stem}](figures/{fig.stem}.png)", "",
                  f"*{fig.caption}* (PDF: `figures/{fig.stem}.pdf`)", ""]
        if fig.stem == "curves_per_task":
            lines += replays
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
