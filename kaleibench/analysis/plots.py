"""Seaborn/matplotlib figures for the report; every function takes ``ax=None`` and returns it.

Figures are built with the object-oriented API on :class:`matplotlib.figure.Figure` (Agg canvas),
never through ``pyplot``, so nothing global (backend, current figure, rcParams) is touched.
matplotlib and seaborn are imported inside the functions that need them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kaleibench.analysis._io import atomic_write_bytes
from kaleibench.analysis.curves import Curve
from kaleibench.analysis.stats import Interval, Profile, probability_of_improvement
from kaleibench.analysis.tables import LOWER_IS_BETTER, METRIC_LABELS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_figure(n_cols: int = 1, n_rows: int = 1, size: tuple[float, float] = (4.0, 3.0)) -> Figure:
    """A Figure on an Agg canvas with ``n_rows × n_cols`` subplots of ``size`` inches each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * n_cols, size[1] * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    fig.subplots(n_rows, n_cols, squeeze=False)
    return fig


LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
"""Line styles cycled over variants; solid lines are drawn lowest so dashes on top stay visible."""

MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
"""Marker shapes cycled over variants."""


@dataclass(frozen=True)
class Style:
    """How one variant is drawn in every figure."""

    color: tuple[float, float, float]
    linestyle: str
    marker: str
    filled: bool
    zorder: float

    def line_kwargs(self, markers: bool = True) -> dict[str, Any]:
        """Keyword arguments of ``Axes.plot`` for this style."""
        kwargs: dict[str, Any] = {
            "color": self.color, "linestyle": self.linestyle, "zorder": self.zorder,
        }  # fmt: skip
        if markers:
            kwargs.update(marker=self.marker, ms=4 if self.filled else 5,
                          fillstyle="full" if self.filled else "none")  # fmt: skip
        return kwargs


COLOR_ORDER = (0, 1, 2, 4, 7, 9, 3, 5, 6, 8)
"""Order in which seaborn's colour-blind-safe palette is handed out: blue, orange, green,
pink, grey, light blue first, then vermillion, brown, light pink and yellow. The palette's
own order gives the 4th-6th variants vermillion and brown next to the 2nd's orange: three
orange-brown curves in a 6-variant report."""


def variant_styles(names: Sequence[str]) -> dict[str, Style]:
    """One fixed style per variant, assigned in *sorted* name order.

    Colour (colour-blind-safe palette), line style and marker depend only on a name's rank
    among ``names`` sorted, never on plotting order; a report builds this once from the suite's
    variant list and passes it to every figure, so a variant keeps its colour in all of them.
    Neighbours in the order differ in line style, marker shape and marker fill, so two
    variants with identical curves remain distinguishable (dashes on top of a solid line).
    """
    import seaborn as sns

    ordered = sorted(set(names))
    colors = [sns.color_palette("colorblind", n_colors=10)[i] for i in COLOR_ORDER]
    styles = {}
    for i, name in enumerate(ordered):
        k = i % len(LINESTYLES)
        styles[name] = Style(
            color=tuple(colors[i % len(colors)]),  # type: ignore[arg-type]
            linestyle=LINESTYLES[k],
            marker=MARKERS[i % len(MARKERS)],
            filled=i % 2 == 0,
            zorder=2.0 + 0.1 * k,
        )
    return styles


def palette(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Colour per name from :func:`variant_styles` (independent of the order of ``names``)."""
    return {n: st.color for n, st in variant_styles(names).items()}


def _styles(names: Sequence[str], styles: dict[str, Style] | None) -> dict[str, Style]:
    if styles is not None and all(n in styles for n in names):
        return styles
    return variant_styles(names)


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` (150 dpi) and ``<stem>.pdf`` atomically; return both paths."""
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(
            buf, format=ext, dpi=150, metadata={"CreationDate": None} if ext == "pdf" else {}
        )
        path = Path(out_dir) / f"{stem}.{ext}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else new_figure().axes[0]


MIN_BAND_SEEDS = 3
"""Fewest seeds for a t-band on a learning curve; with fewer, each seed is drawn as a line.

With 2 seeds the 95% t-interval is the mean ± 12.7 × SE (1 dof): it says nothing the two seed
lines do not show better, and it spans far outside the values a task can produce.
"""


def observed_range(curves: dict[str, Curve]) -> tuple[float, float]:
    """``(min, max)`` of every finite value of ``curves`` (NaN, NaN when there is none)."""
    values = [c.values[np.isfinite(c.values)] for c in curves.values()]
    flat = np.concatenate(values) if values else np.empty(0)
    if flat.size == 0:
        return float("nan"), float("nan")
    return float(flat.min()), float(flat.max())


def seeds_label(curve: Curve) -> str:
    """``n=3``, or ``n=1–3`` when the number of seeds with a value differs between steps."""
    counts = np.isfinite(curve.values).sum(axis=0)
    counts = counts[counts > 0]
    low, high = (int(counts.min()), int(counts.max())) if counts.size else (0, 0)
    return f"n={high}" if low == high else f"n={low}–{high}"


def plot_curves(
    curves: dict[str, Curve],
    title: str = "",
    ylabel: str = "return",
    ax: Axes | None = None,
    styles: dict[str, Style] | None = None,
    clip: tuple[float, float] | None = None,
) -> Axes:
    """Mean over seeds per variant, with a t-interval band clipped to a feasible range.

    Args:
        curves: ``{variant: Curve}``.
        title: Panel title.
        ylabel: Y axis label.
        ax: Axes to draw on (a new figure's when None).
        styles: Fixed per-variant styles (:func:`variant_styles`); built from the names if None.
        clip: ``(low, high)`` the metric can take; bands are clipped to it (beyond it a band
            only shows the t quantile, not the data). Default: the range of the plotted values
            (all variants and seeds), a stand-in for metrics whose range is unknown; it is
            narrower than the feasible range, so callers that know better pass it (the
            report's return curves pass the range of single-episode returns).

    A point's band needs :data:`MIN_BAND_SEEDS` seeds there; where fewer have reached a step
    (few seeds, or runs still in progress) the variant's seeds are drawn as thin lines instead.
    The legend gives the seeds per point: ``n=3``, or ``n=1–3`` when runs in progress have not
    reached every step.
    The y axis spans the seeds' values (5 % margin): early in training, where seeds differ most,
    a 3-seed band can be several times wider than the data, and would squash the curves.
    """
    ax = _axes(ax)
    styles = _styles(list(curves), styles)
    low_clip, high_clip = clip if clip is not None else observed_range(curves)
    for variant, curve in curves.items():
        style = styles[variant]
        mean, low, high = curve.summary()  # (P,) each
        markers = curve.steps.size <= 30  # single evals stay visible
        ax.plot(curve.steps, mean, label=f"{variant} ({seeds_label(curve)})",
                **style.line_kwargs(markers))
        banded = np.isfinite(curve.values).sum(axis=0) >= MIN_BAND_SEEDS
        if not banded.all():
            for row in curve.values:
                ax.plot(curve.steps, row, color=style.color, linestyle=style.linestyle,
                        linewidth=0.7, alpha=0.45, zorder=style.zorder - 0.5)  # fmt: skip
        if not banded.any():
            continue
        if np.isfinite(low_clip) and np.isfinite(high_clip):
            low, high = np.clip(low, low_clip, high_clip), np.clip(high, low_clip, high_clip)
        ax.fill_between(curve.steps, low, high, where=banded, color=style.color, alpha=0.15,
                        linewidth=0)  # fmt: skip
    seed_low, seed_high = observed_range(curves)
    if np.isfinite(seed_low) and seed_high > seed_low:  # the axis shows the seeds' values; a
        margin = 0.05 * (seed_high - seed_low)  # wider band runs out of the frame, visibly
        ax.set_ylim(seed_low - margin, seed_high + margin)
    ax.set(title=title, xlabel="environment steps", ylabel=ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small", framealpha=0.6)
    return ax


def plot_band(
    bands: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str = "",
    ylabel: str = "IQM normalised return",
    ax: Axes | None = None,
    styles: dict[str, Style] | None = None,
) -> Axes:
    """Lines with bands from ``{variant: (steps (P,), (3, P) point/low/high)}``; NaN: no band."""
    ax = _axes(ax)
    styles = _styles(list(bands), styles)
    for variant, (steps, est) in bands.items():
        style = styles[variant]
        ax.plot(steps, est[0], label=variant, **style.line_kwargs(steps.size <= 30))
        if np.isfinite(est[1:]).any():
            ax.fill_between(steps, est[1], est[2], color=style.color, alpha=0.15, linewidth=0)
    ax.set(title=title, xlabel="environment steps", ylabel=ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small", framealpha=0.6)
    return ax


def _interval_row(ax: Axes, y: float, iv: Interval, style: Style) -> None:
    """A thick bar over ``[low, high]`` and a dot at the point (visible if low == high, with a
    tick in the variant's colour so a zero-width interval still shows whose it is).

    Without an interval (NaN bounds) only the point is drawn, as a larger dot in the variant's
    colour.
    """
    if np.isfinite(iv.low) and np.isfinite(iv.high):
        ax.hlines(y, iv.low, iv.high, color=style.color, linewidth=10, alpha=0.7)
        ax.plot([iv.point], [y], marker="|", color=style.color, markersize=14, mew=3)
        ax.plot([iv.point], [y], marker="o", color="black", markersize=4)
    else:
        ax.plot([iv.point], [y], marker=style.marker, color=style.color, markersize=9,
                markeredgecolor="black")  # fmt: skip


def plot_intervals(
    intervals: dict[str, dict[str, Interval]],
    metric: str,
    ax: Axes | None = None,
    styles: dict[str, Style] | None = None,
) -> Axes:
    """Horizontal interval plot of one aggregate metric: a bar per variant, dot at the point."""
    ax = _axes(ax)
    variants = list(intervals)
    styles = _styles(variants, styles)
    for y, v in enumerate(variants):
        _interval_row(ax, y, intervals[v][metric], styles[v])
    ax.set_yticks(range(len(variants)), variants)
    title = METRIC_LABELS.get(metric, metric)
    if metric in LOWER_IS_BETTER:
        title += "\n(lower is better)"
    ax.set(title=title, xlabel="normalised score")
    ax.invert_yaxis()
    return ax


def equal_scale(axes: Sequence[Axes]) -> None:
    """Give every panel the x span of the widest one, each centred on its own data.

    Equal distances then mean equal score differences in every panel. A panel of point
    estimates alone (IQM, median at small n) would otherwise autoscale to its few points and
    make a difference of 0.2 look as large as the widest interval next to it.
    """
    limits = [ax.get_xlim() for ax in axes]
    width = max(high - low for low, high in limits)
    for ax, (low, high) in zip(axes, limits, strict=True):
        centre = (low + high) / 2
        ax.set_xlim(centre - width / 2, centre + width / 2)


def plot_profiles(
    profiles: dict[str, Profile], ax: Axes | None = None, styles: dict[str, Style] | None = None
) -> Axes:
    """Performance profiles ``P(score > tau)`` with pointwise bootstrap bands (if not NaN)."""
    ax = _axes(ax)
    styles = _styles(list(profiles), styles)
    for v, prof in profiles.items():
        style = styles[v]
        ax.plot(prof.taus, prof.point, label=v, markevery=10, **style.line_kwargs())
        if np.isfinite(prof.low).any():
            ax.fill_between(prof.taus, prof.low, prof.high, color=style.color, alpha=0.15,
                            linewidth=0)  # fmt: skip
    ax.set(xlabel=r"normalised score $\tau$", ylabel=r"fraction of runs with score $> \tau$")
    ax.set_ylim(-0.02, 1.02)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return ax


def _short(name: str, limit: int = 16) -> str:
    """``name`` cut to ``limit`` characters with an ellipsis (tick labels)."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_poi_matrix(score_dict: dict[str, np.ndarray], ax: Axes | None = None) -> Axes:
    """Heatmap of ``P(row > column)`` point estimates for every pair of variants.

    Labels stay readable: y labels horizontal, x labels at 45°, names over 16 characters cut,
    and label and annotation sizes shrink with the number of variants.
    """
    import seaborn as sns

    ax = _axes(ax)
    names = list(score_dict)
    mat = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                mat[i, j] = probability_of_improvement(score_dict[a], score_dict[b])
    size = float(np.clip(48 / max(len(names), 1), 5, 9))
    labels = [_short(n) for n in names]
    sns.heatmap(
        mat, ax=ax, vmin=0, vmax=1, center=0.5, cmap="vlag", annot=True, fmt=".2f",
        annot_kws={"size": size}, xticklabels=labels, yticklabels=labels,
        cbar_kws={"label": "P(row > column)"}, square=True,
    )  # fmt: skip
    ax.tick_params(axis="y", labelrotation=0, labelsize=size)
    ax.tick_params(axis="x", labelrotation=45, labelsize=size)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    ax.set(xlabel="Y (column)", ylabel="X (row)")
    return ax


def plot_poi_intervals(
    poi: dict[str, Interval],
    baseline: str,
    ax: Axes | None = None,
    styles: dict[str, Style] | None = None,
) -> Axes:
    """``P(X > baseline)`` per variant with its bootstrap interval (if any); 0.5 marked."""
    ax = _axes(ax)
    variants = list(poi)
    styles = _styles(variants, styles)
    for y, v in enumerate(variants):
        _interval_row(ax, y, poi[v], styles[v])
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(variants)), variants)
    ax.set(
        xlim=(-0.02, 1.02),
        xlabel=f"P(X > {baseline})",
        title=f"Probability of improvement vs {baseline}",
    )
    ax.invert_yaxis()
    return ax
