"""Comparison tables rendered as Markdown, LaTeX (booktabs) and CSV.

A :class:`Table` holds plain-text cells plus which cells are bold (the best of a column) and
which carry a significance mark; the three renderers only differ in syntax. Captions are part of
the table and always state the number of seeds, the interval method, bootstrap reps and seed.
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
}  # fmt: skip


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters.

    Examples:
        >>> latex_escape("kalei_qmix 50%")
        'kalei\\\\_qmix 50\\\\%'
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
            cells.append(body + (rf"$^{{\text{{{mark}}}}}$" if mark else ""))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """CSV with the header row; marks are appended to the cell text, bold is dropped."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.header)
    for i, row in enumerate(table.rows):
        writer.writerow([table.cell(i, j) for j in range(len(row))])
    return buf.getvalue()


def write_table(table: Table, out_dir: Path) -> dict[str, Path]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` atomically; return their paths."""
    paths = {}
    for ext, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
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
) -> Table:
    """Variants × aggregate metrics, "point [lo, hi]", best per column in bold.

    A ``P(X > baseline)`` column is added when ``poi`` is given; its cell is marked with
    :data:`POI_MARK` when the POI interval excludes 0.5.
    """
    variants = list(intervals)
    metrics = list(next(iter(intervals.values()))) if intervals else []
    header = ["Variant"] + [METRIC_LABELS.get(m, m) for m in metrics]
    if poi and baseline:
        header.append(f"P(X > {baseline})")
    rows: list[list[str]] = []
    marks: dict[tuple[int, int], str] = {}
    for i, v in enumerate(variants):
        row = [v] + [intervals[v][m].format(digits) for m in metrics]
        if poi and baseline:
            p = poi.get(v)
            row.append(p.format(digits) if p else "—")
            if p and (p.low > 0.5 or p.high < 0.5):
                marks[(i, len(row) - 1)] = POI_MARK
        rows.append(row)
    bold = set()
    for j, m in enumerate(metrics, start=1):
        points = [intervals[v][m].point for v in variants]
        bold |= {(i, j) for i in _best_rows(points, m in LOWER_IS_BETTER)}
    return Table("aggregate", caption, header, rows, bold, marks)


def task_table(
    cells: dict[tuple[str, str], Interval | None],
    variants: list[str],
    tasks: list[str],
    tests: list[PairTest],
    caption: str,
    alpha: float = 0.05,
    digits: int = 1,
) -> Table:
    """Variants × tasks of per-task "mean [lo, hi]"; best mean per task in bold.

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
    return Table("per_task", caption, ["Variant", *tasks], rows, bold, marks)
