"""Seaborn/matplotlib figures for the report; every function takes ``ax=None`` and returns it.

Figures are built with the object-oriented API on :class:`matplotlib.figure.Figure` (Agg canvas),
never through ``pyplot``, so nothing global (backend, current figure, rcParams) is touched.
matplotlib and seaborn are imported inside the functions that need them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kaleibench.analysis._io import atomic_write_bytes
from kaleibench.analysis.curves import Curve
from kaleibench.analysis.stats import Interval, Profile, probability_of_improvement
from kaleibench.analysis.tables import METRIC_LABELS

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


def palette(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Colour-blind-safe colour per name, stable for a given order."""
    import seaborn as sns

    colors = sns.color_palette("colorblind", n_colors=max(len(names), 1))
    return {n: tuple(c) for n, c in zip(names, colors, strict=False)}


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


def plot_curves(
    curves: dict[str, Curve], title: str = "", ylabel: str = "return", ax: Axes | None = None
) -> Axes:
    """Mean over seeds with a shaded t-interval band, one line per variant."""
    ax = _axes(ax)
    colors = palette(list(curves))
    for variant, curve in curves.items():
        mean, low, high = curve.summary()  # (P,) each
        marker = "o" if curve.steps.size <= 30 else None  # single evals stay visible
        label = f"{variant} (n={len(curve.seeds)})"
        ax.plot(curve.steps, mean, color=colors[variant], label=label, marker=marker, ms=3)
        ax.fill_between(curve.steps, low, high, color=colors[variant], alpha=0.2, linewidth=0)
    ax.set(title=title, xlabel="environment steps", ylabel=ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return ax


def plot_band(
    bands: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str = "",
    ylabel: str = "IQM normalised return",
    ax: Axes | None = None,
) -> Axes:
    """Lines with bands from ``{variant: (steps (P,), (3, P) point/low/high)}``."""
    ax = _axes(ax)
    colors = palette(list(bands))
    for variant, (steps, est) in bands.items():
        ax.plot(steps, est[0], color=colors[variant], label=variant)
        ax.fill_between(steps, est[1], est[2], color=colors[variant], alpha=0.2, linewidth=0)
    ax.set(title=title, xlabel="environment steps", ylabel=ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return ax


def _interval_row(ax: Axes, y: float, iv: Interval, color: tuple[float, float, float]) -> None:
    """A thick bar over ``[low, high]`` and a black dot at the point (visible if low == high)."""
    ax.hlines(y, iv.low, iv.high, color=color, linewidth=10, alpha=0.7)
    ax.plot([iv.point], [y], marker="o", color="black", markersize=4)


def plot_intervals(
    intervals: dict[str, dict[str, Interval]], metric: str, ax: Axes | None = None
) -> Axes:
    """Horizontal interval plot of one aggregate metric: a bar per variant, tick at the point."""
    ax = _axes(ax)
    variants = list(intervals)
    colors = palette(variants)
    for y, v in enumerate(variants):
        iv = intervals[v][metric]
        _interval_row(ax, y, iv, colors[v])
    ax.set_yticks(range(len(variants)), variants)
    ax.set(title=METRIC_LABELS.get(metric, metric), xlabel="normalised score")
    ax.invert_yaxis()
    return ax


def plot_profiles(profiles: dict[str, Profile], ax: Axes | None = None) -> Axes:
    """Performance profiles ``P(score > tau)`` with pointwise bootstrap bands."""
    ax = _axes(ax)
    colors = palette(list(profiles))
    for v, prof in profiles.items():
        ax.plot(prof.taus, prof.point, color=colors[v], label=v)
        ax.fill_between(prof.taus, prof.low, prof.high, color=colors[v], alpha=0.2, linewidth=0)
    ax.set(xlabel=r"normalised score $\tau$", ylabel=r"fraction of runs with score $> \tau$")
    ax.set_ylim(-0.02, 1.02)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return ax


def plot_poi_matrix(score_dict: dict[str, np.ndarray], ax: Axes | None = None) -> Axes:
    """Heatmap of ``P(row > column)`` point estimates for every pair of variants."""
    import seaborn as sns

    ax = _axes(ax)
    names = list(score_dict)
    mat = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                mat[i, j] = probability_of_improvement(score_dict[a], score_dict[b])
    sns.heatmap(
        mat, ax=ax, vmin=0, vmax=1, center=0.5, cmap="vlag", annot=True, fmt=".2f",
        xticklabels=names, yticklabels=names, cbar_kws={"label": "P(row > column)"},
    )  # fmt: skip
    ax.set(xlabel="Y", ylabel="X")
    return ax


def plot_poi_intervals(poi: dict[str, Interval], baseline: str, ax: Axes | None = None) -> Axes:
    """``P(X > baseline)`` per variant with its bootstrap interval; 0.5 marked."""
    ax = _axes(ax)
    variants = list(poi)
    colors = palette(variants)
    for y, v in enumerate(variants):
        iv = poi[v]
        _interval_row(ax, y, iv, colors[v])
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(variants)), variants)
    ax.set(
        xlim=(-0.02, 1.02),
        xlabel=f"P(X > {baseline})",
        title=f"Probability of improvement vs {baseline}",
    )
    ax.invert_yaxis()
    return ax
