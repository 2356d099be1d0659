"""Figures: fixed styles per variant, clipped learning-curve bands, readable POI labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from kaleibench.analysis import plots, report_render
from kaleibench.analysis.curves import Curve, cell_curve, episode_return_range, read_metrics
from kaleibench.analysis.report import analyse
from kaleibench.analysis.stats import Interval
from kaleibench.analysis.synthetic import write_synthetic_results

NAMES = ["qmix", "alma-mine", "alma-alloc", "kalei-qmix"]


def test_variant_styles_depend_on_the_set_not_the_order() -> None:
    styles = plots.variant_styles(NAMES)
    assert styles == plots.variant_styles(list(reversed(NAMES)))
    assert sorted(styles) == sorted(NAMES)
    ordered = sorted(NAMES)  # alma-alloc, alma-mine, kalei-qmix, qmix
    for a, b in zip(ordered, ordered[1:], strict=False):
        sa, sb = styles[a], styles[b]
        assert sa.color != sb.color and sa.linestyle != sb.linestyle
        assert sa.marker != sb.marker and sa.filled != sb.filled
    # solid lines lie lowest, so a dashed twin drawn over an identical solid line stays visible
    assert styles["alma-alloc"].linestyle == "-"
    assert styles["alma-mine"].zorder > styles["alma-alloc"].zorder


def _drawn_colors(ax: Any) -> dict[str, tuple[float, float, float]]:
    """Colour of the first line or marker artist labelled/positioned per variant."""
    out = {}
    for line in ax.lines:
        label = line.get_label().split(" (n=")[0]
        if not label.startswith("_"):
            out[label] = to_rgb(line.get_color())
    return out


def test_a_variant_has_one_colour_in_every_figure() -> None:
    styles = plots.variant_styles(NAMES)
    steps = np.arange(3.0)
    curves = {v: Curve(steps, np.ones((3, 3)) * i, (0, 1, 2)) for i, v in enumerate(NAMES)}
    # plotting order and subsets differ between figures; colours must not
    ax = plots.plot_curves(dict(reversed(list(curves.items()))), styles=styles)
    for v, color in _drawn_colors(ax).items():
        assert color == pytest.approx(styles[v].color)
    subset = {v: Interval(0.5, np.nan, np.nan) for v in NAMES if v != "qmix"}
    ax = plots.plot_poi_intervals(subset, "qmix", styles=styles)
    drawn = [to_rgb(line.get_color()) for line in ax.lines if line.get_marker() != "None"]
    assert drawn == [pytest.approx(styles[v].color) for v in subset]
    # without an explicit mapping, colours still come from the sorted names
    ax1 = plots.plot_curves({v: curves[v] for v in NAMES})
    ax2 = plots.plot_curves({v: curves[v] for v in reversed(NAMES)})
    assert _drawn_colors(ax1) == _drawn_colors(ax2)


def test_report_passes_one_style_mapping_to_every_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_synthetic_results(tmp_path / "s", variants=("qmix", "kalei-qmix", "alma"),
                                   tasks={"mpe/spread-v0": (-200.0, -100.0)}, seeds=(0, 1),
                                   skills=(0.3, 0.6, 0.6))  # fmt: skip
    a = analyse(root, baseline="qmix", reps=200)
    seen: list[tuple[str, Any]] = []
    for name in ("plot_curves", "plot_band", "plot_intervals", "plot_profiles",
                 "plot_poi_intervals"):  # fmt: skip
        real = getattr(plots, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            seen.append((_name, kwargs.get("styles")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(report_render.plots, name, spy)
    monkeypatch.setattr(report_render.plots, "save_figure", lambda *args, **kwargs: [])
    report_render.write_figures(a, tmp_path / "out")
    assert {name for name, _ in seen} >= {"plot_curves", "plot_band", "plot_intervals",
                                          "plot_profiles", "plot_poi_intervals"}  # fmt: skip
    expected = plots.variant_styles(["alma", "kalei-qmix", "qmix"])
    assert all(styles == expected for _, styles in seen), seen


def test_curve_bands_stay_inside_the_observed_range() -> None:
    steps = np.arange(4.0)
    wide = np.array([[-10.0, -5.0, -2.0, 0.0], [-90.0, -60.0, -30.0, -1.0], [-50, -40, -20, -0.5]])
    ax = plots.plot_curves({"a": Curve(steps, wide, (0, 1, 2))})
    (band,) = ax.collections
    ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    assert ys.min() >= wide.min() - 1e-9 and ys.max() <= wide.max() + 1e-9
    # the unclipped t-band (t = 4.3 on 2 dof) would reach far above 0, where no return lies
    _, _, high = Curve(steps, wide, (0, 1, 2)).summary()
    assert high.max() > 10
    # an explicit feasible range is honoured too
    ax = plots.plot_curves({"a": Curve(steps, wide, (0, 1, 2))}, clip=(-40.0, -1.0))
    ys = np.concatenate([p.vertices[:, 1] for p in ax.collections[0].get_paths()])
    assert ys.min() >= -40.0 - 1e-9 and ys.max() <= -1.0 + 1e-9


def test_two_seed_curves_draw_seeds_not_bands() -> None:
    steps = np.arange(3.0)
    two = np.array([[-100.0, -80.0, -70.0], [-140.0, -90.0, -60.0]])
    ax = plots.plot_curves({"a": Curve(steps, two, (0, 1))})
    assert not ax.collections  # no band
    assert len(ax.lines) == 3  # the mean and one thin line per seed
    low, high = ax.get_ylim()
    assert low > -200 and high < 0  # the axis stays on the data


def test_runs_in_progress_band_only_where_three_seeds_have_reached_a_step() -> None:
    # seeds 1 and 2 are still running: they have values at the first 2 of 5 steps only
    values = np.array([[0.0, 1.0, 2.0, 3.0, 4.0],
                       [0.5, 1.5, np.nan, np.nan, np.nan],
                       [1.0, 2.0, np.nan, np.nan, np.nan]])  # fmt: skip
    curve = Curve(np.arange(5.0) * 10, values, (0, 1, 2))
    ax = plots.plot_curves({"alma": curve})
    labels = [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
    assert labels == ["alma (n=1–3)"]  # not n=3: one seed alone beyond step 10
    (band,) = ax.collections
    xs = np.concatenate([p.vertices[:, 0] for p in band.get_paths()])
    assert xs.min() == 0.0 and xs.max() == 10.0  # no band where a single seed is left
    assert len(ax.lines) == 1 + 3  # the mean and the three seeds as thin lines
    assert plots.seeds_label(Curve(np.arange(2.0), np.ones((3, 2)), (0, 1, 2))) == "n=3"


def test_poi_heatmap_labels_are_readable() -> None:
    rng = np.random.default_rng(0)
    names = [*NAMES, "qmix-1r3", "qmix-lambda", "a-very-long-variant-name-indeed"]
    # the report's two-panel layout, where seaborn alone turns the y labels vertical
    fig = plots.new_figure(n_cols=2, size=(4.8, 0.6 * len(names) + 1.6))
    ax = plots.plot_poi_matrix({v: rng.normal(size=(3, 2)) for v in names}, ax=fig.axes[0])
    assert all(t.get_rotation() == 0 for t in ax.get_yticklabels())
    assert all(t.get_rotation() == 45 for t in ax.get_xticklabels())
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert max(len(label) for label in labels) <= 16 and labels[-1].endswith("…")


def test_report_return_bands_are_clipped_to_single_episode_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-task band may reach past the seeds' means, up to the single-episode returns:
    clipping at the seed means would hide the upper half of the final interval."""
    root = write_synthetic_results(tmp_path / "s", variants=("qmix",),
                                   tasks={"mpe/spread-v0": (-200.0, -100.0)}, seeds=(0, 1, 2),
                                   skills=(0.5,))  # fmt: skip
    a = analyse(root, baseline="qmix", reps=200)
    results = a.results
    curve = cell_curve(results, "qmix", "mpe/spread-v0")
    assert curve is not None
    rows = [r for run in results.cell("qmix", "mpe/spread-v0")
            for r in read_metrics(run.path) if r.get("kind") == "eval"]  # fmt: skip
    episodes = np.concatenate([r["returns"] for r in rows])
    low, high = episode_return_range(results, ["qmix"], "mpe/spread-v0")
    assert (low, high) == (episodes.min(), episodes.max())
    assert low < np.nanmin(curve.values) and high > np.nanmax(curve.values)
    assert episode_return_range(results, [], "mpe/spread-v0") != episode_return_range(
        results, ["qmix"], "mpe/spread-v0")  # only the named variants count
    clips: list[Any] = []
    real = plots.plot_curves

    def spy(*args: Any, **kwargs: Any) -> Any:
        clips.append(kwargs.get("clip"))
        return real(*args, **kwargs)

    monkeypatch.setattr(report_render.plots, "plot_curves", spy)
    monkeypatch.setattr(report_render.plots, "save_figure", lambda *args, **kwargs: [])
    report_render.write_figures(a, tmp_path / "out")
    assert clips[0] == (low, high)  # the per-task return panel


def test_curve_axis_spans_the_seeds_not_a_wide_early_band() -> None:
    steps = np.arange(3.0)
    values = np.array([[-170.0, -62.0, -56.0], [-124.0, -64.0, -61.0], [-80.0, -60.0, -57.0]])
    ax = plots.plot_curves({"a": Curve(steps, values, (0, 1, 2))}, clip=(-240.0, -20.0))
    band = np.concatenate([p.vertices[:, 1] for p in ax.collections[0].get_paths()])
    assert band.min() < -200  # the step-0 band is drawn up to the feasible range ...
    low, high = ax.get_ylim()  # ... but the axis stays on the seeds' values
    assert -180 < low <= -170 and -56 <= high < -50


def test_six_variants_get_six_well_separated_colours() -> None:
    names = ["alma-alloc", "alma-mine", "kalei-qmix", "qmix", "qmix-1r3", "qmix-lambda"]
    colours = np.array([plots.variant_styles(names)[n].color for n in names])
    gaps = [np.abs(a - b).sum() for i, a in enumerate(colours) for b in colours[i + 1:]]
    assert min(gaps) > 0.4  # in the palette's own order orange and vermillion differ by 0.25
