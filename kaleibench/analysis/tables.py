"""Comparison tables rendered as Markdown, LaTeX (booktabs) and CSV.

A :class:`Table` holds plain-text cells plus which cells are bold (the best of a column) and
which carry a significance mark; the Markdown and LaTeX renderers only differ in syntax. Captions
are part of the table and always state the number of seeds, the interval method, bootstrap reps
and seed.

The CSV file is for machines, not for reading: it holds the same numbers as plain numeric columns
(point, low, high, n, p-values; NaN written as ``nan``) instead of formatted ``"0.50 [0.40, 0.60]"``
strings, and the caption goes to a sidecar ``<name>.caption.txt`` so the CSV stays parseable.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kaleibench.analysis._io import atomic_write_text
from kaleibench.analysis.significance import PairTest
from kaleibench.analysis.stats import Interval

WELCH_MARK = "*"
"""Mark for a Holm-corrected two-sided Welch p < alpha against the baseline."""

MWU_MARK = "†"
"""Mark for a Holm-corrected two-sided Mann-Whitney p < alpha against the baseline."""

POI_MARK = "‡"
"""Mark for a probability of improvement whose 95% interval excludes 0.5."""

METRIC_LABELS = {
    "iqm": "IQM",
    "mean": "Mean",
    "median": "Median",
    "optimality_gap": "Optimality gap",
}
LOWER_IS_BETTER = {"optimality_gap"}


@dataclass(frozen=True)
class Table:
    """A rendered-agnostic table: ``rows[i][j]`` is the text of row ``i``, column ``j``."""

    name: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    marks: dict[tuple[int, int], str] = field(default_factory=dict)
    data_header: list[str] = field(default_factory=list)
    data_rows: list[list[str | float | int]] = field(default_factory=list)

    def cell(self, i: int, j: int) -> str:
        """Plain text of a cell followed by its mark, if any."""
        return self.rows[i][j] + self.marks.get((i, j), "")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown with the caption as a leading italic paragraph."""
    lines = [f"*{_md_escape(table.caption)}*", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in table.header) + " |")
    lines.append("|" + "|".join(["---"] + [":---:"] * (len(table.header) - 1)) + "|")
    for i, row in enumerate(table.rows):
        cells = []
        for j in range(len(row)):
            text = _md_escape(table.cell(i, j))
            cells.append(f"**{text}**" if (i, j) in table.bold else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
    "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
    # OT1, LaTeX's default font encoding, prints < and > in text as ¡ and ¿
    "<": "$<$", ">": "$>$",
    # the non-ASCII characters captions use, so the file compiles with pdflatex as is
    "†": r"\textdagger{}", "‡": r"\textdaggerdbl{}", "—": "---", "–": "--", "−": "$-$",
    "±": r"$\pm$", "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$", "≈": r"$\approx$",
    "α": r"$\alpha$", "λ": r"$\lambda$", "τ": r"$\tau$", "…": r"\ldots{}",
}  # fmt: skip
_LATEX_MARKS = {WELCH_MARK: "*", MWU_MARK: r"\dagger", POI_MARK: r"\ddagger"}
"""Significance marks as math-mode superscripts (no package needed)."""


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters and spell the captions' non-ASCII ones as macros.

    Examples:
        >>> latex_escape("kalei_qmix 50%")
        'kalei\\\\_qmix 50\\\\%'
        >>> latex_escape("P(X > Y) ≥ 0.5 †")
        'P(X $>$ Y) $\\\\geq$ 0.5 \\\\textdagger{}'
    """
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A ``table`` float with a booktabs ``tabular``; marks become superscripts."""
    cols = "l" + "c" * (len(table.header) - 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(table.rows):
        cells = []
        for j, text in enumerate(row):
            body = latex_escape(text)
            body = rf"\textbf{{{body}}}" if (i, j) in table.bold else body
            mark = table.marks.get((i, j))
            sup = "".join(_LATEX_MARKS[ch] for ch in mark) if mark else ""
            cells.append(body + (f"$^{{{sup}}}$" if mark else ""))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _csv_value(value: str | float | int) -> str | float | int:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def to_csv(table: Table) -> str:
    """CSV of the numeric data (``data_header``/``data_rows``), one value per column.

    Tables built without numeric data fall back to the display text (marks appended).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if table.data_header:
        writer.writerow(table.data_header)
        for data_row in table.data_rows:
            writer.writerow([_csv_value(v) for v in data_row])
        return buf.getvalue()
    writer.writerow(table.header)
    for i, row in enumerate(table.rows):
        writer.writerow([table.cell(i, j) for j in range(len(row))])
    return buf.getvalue()


def caption_text(table: Table) -> str:
    """The caption sidecar of the CSV: the caption, then the CSV's column names.

    Examples:
        >>> caption_text(Table("t", "Means; n = 3 seeds.", ["V"], [["a"]], data_header=["v"]))
        'Means; n = 3 seeds.\\nCSV columns: v (NaN written as nan).\\n'
    """
    columns = table.data_header or table.header
    return f"{table.caption}\nCSV columns: {', '.join(columns)} (NaN written as nan).\n"


def write_table(table: Table, out_dir: Path) -> dict[str, Path]:
    """Write ``<name>.{md,tex,csv}`` and ``<name>.caption.txt`` atomically; return their paths."""
    paths = {}
    renderers = (("md", to_markdown), ("tex", to_latex), ("csv", to_csv),
                 ("caption.txt", caption_text))  # fmt: skip
    for ext, render in renderers:
        path = Path(out_dir) / f"{table.name}.{ext}"
        atomic_write_text(path, render(table))
        paths[ext] = path
    return paths


def _best_rows(values: Sequence[float], lower_is_better: bool) -> set[int]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return set()
    best = min(finite) if lower_is_better else max(finite)
    return {i for i, v in enumerate(values) if v == best}


def aggregate_table(
    intervals: dict[str, dict[str, Interval]],
    poi: dict[str, Interval],
    baseline: str | None,
    caption: str,
    digits: int = 2,
    n_runs: dict[str, int] | None = None,
) -> Table:
    """Variants × aggregate metrics, "point [lo, hi]", best per column in bold.

    A ``P(X > baseline)`` column is added when ``poi`` is given; its cell is marked with
    :data:`POI_MARK` when the POI interval excludes 0.5 (never when it has no interval). The
    CSV has columns ``variant, n, <metric>, <metric>_lo, <metric>_hi, ...`` (and
    ``poi, poi_lo, poi_hi``); ``n_runs`` gives the runs per variant (NaN when not given).
    """
    variants = list(intervals)
    metrics = list(next(iter(intervals.values()))) if intervals else []
    header = ["Variant"] + [METRIC_LABELS.get(m, m) for m in metrics]
    if poi and baseline:
        header.append(f"P(X > {baseline})")
    rows: list[list[str]] = []
    marks: dict[tuple[int, int], str] = {}
    data_header = ["variant", "n"] + [f"{m}{s}" for m in metrics for s in ("", "_lo", "_hi")]
    data_rows: list[list[str | float | int]] = []
    if poi and baseline:
        data_header += ["poi", "poi_lo", "poi_hi"]
    for i, v in enumerate(variants):
        row = [v] + [intervals[v][m].format(digits) for m in metrics]
        n = (n_runs or {}).get(v)
        data_row: list[str | float | int] = [v, n if n is not None else math.nan]
        for m in metrics:
            iv = intervals[v][m]
            data_row += [iv.point, iv.low, iv.high]
        if poi and baseline:
            p = poi.get(v)
            row.append(p.format(digits) if p else "—")
            data_row += [p.point, p.low, p.high] if p else [math.nan] * 3
            if p and (p.low > 0.5 or p.high < 0.5):
                marks[(i, len(row) - 1)] = POI_MARK
        rows.append(row)
        data_rows.append(data_row)
    bold = set()
    for j, m in enumerate(metrics, start=1):
        points = [intervals[v][m].point for v in variants]
        bold |= {(i, j) for i in _best_rows(points, m in LOWER_IS_BETTER)}
    return Table("aggregate", caption, header, rows, bold, marks, data_header, data_rows)


def task_table(
    cells: dict[tuple[str, str], Interval | None],
    variants: list[str],
    tasks: list[str],
    tests: list[PairTest],
    caption: str,
    alpha: float = 0.05,
    digits: int = 1,
    counts: dict[tuple[str, str], int] | None = None,
) -> Table:
    """Variants × tasks of per-task "mean [lo, hi]"; best mean per task in bold.

    The CSV is long: one row per (variant, task) with ``status`` (``ok``, ``n/a``,
    ``missing``), ``n`` (from ``counts``), ``mean, lo, hi`` and the Holm-adjusted p-values of
    the tests against the baseline (NaN where not tested).

    Args:
        cells: ``{(variant, task): Interval}``; None for an N/A cell, absent for missing.
        variants: Row order.
        tasks: Column order.
        tests: Pair tests against the baseline; a cell gets :data:`WELCH_MARK` and/or
            :data:`MWU_MARK` when the Holm-corrected p-value is below ``alpha``.
        caption: Table caption.
        alpha: Family-wise significance level.
        digits: Decimals shown.
    """
    rows: list[list[str]] = []
    for v in variants:
        row = [v]
        for t in tasks:
            if (v, t) not in cells:
                row.append("missing")
            else:
                iv = cells[(v, t)]
                row.append("N/A" if iv is None else iv.format(digits))
        rows.append(row)
    bold: set[tuple[int, int]] = set()
    for j, t in enumerate(tasks, start=1):
        points = [iv.point if (iv := cells.get((v, t))) else math.nan for v in variants]
        bold |= {(i, j) for i in _best_rows(points, lower_is_better=False)}
    marks: dict[tuple[int, int], str] = {}
    for test in tests:
        i, j = variants.index(test.variant), tasks.index(test.task) + 1
        mark = WELCH_MARK if test.welch_p_holm < alpha else ""
        mark += MWU_MARK if test.mwu_p_holm < alpha else ""
        if mark:
            marks[(i, j)] = mark
    by_cell = {(t.variant, t.task): t for t in tests}
    data_header = ["variant", "task", "status", "n", "mean", "lo", "hi",
                   "welch_p_holm", "mwu_p_holm"]  # fmt: skip
    data_rows: list[list[str | float | int]] = []
    for v in variants:
        for t in tasks:
            iv = cells.get((v, t))
            status = "missing" if (v, t) not in cells else ("n/a" if iv is None else "ok")
            n = (counts or {}).get((v, t))
            pair = by_cell.get((v, t))
            data_rows.append([
                v, t, status, n if n is not None else math.nan,
                *((iv.point, iv.low, iv.high) if iv else (math.nan,) * 3),
                pair.welch_p_holm if pair else math.nan, pair.mwu_p_holm if pair else math.nan,
            ])  # fmt: skip
    return Table("per_task", caption, ["Variant", *tasks], rows, bold, marks,
                 data_header, data_rows)  # fmt: skip
