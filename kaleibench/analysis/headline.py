"""The headline of a comparison suite: does variant A beat variant B, per observation range?

A suite declares the comparison it exists for (``compare: {a: kalei-qmix, b: qmix-1r3}``); the
report then opens with this section. ``a`` and ``b`` name variants *or sweep families*: every
variant of the results whose name is the base name or the base name followed by ``+field=value``
overrides (the points of a ``sweep:``) belongs to the side, and its runs are pooled.

What is computed, per observation range (the suite's tasks grouped by ``sight_radius``: full
observation, then decreasing radii), on each run's normalised score averaged over the range's
tasks (one value per run and side):

* the difference of means ``A − B`` with a 95 % Welch t interval. Statistical choice: the runs
  of the two sides are independent, and a Welch interval keeps its coverage at any n ≥ 2 without
  assuming equal variances — unlike a percentile bootstrap, which under-covers below
  :data:`~kaleibench.analysis.stats.MIN_BOOTSTRAP_N` runs — so the same interval is used at
  every n and the power of the verdict is computed exactly for it (:func:`power`);
* ``P(A > B)``, the report's probability of improvement
  (:func:`~kaleibench.analysis.stats.report_poi_against`: bootstrap interval from 5 runs per
  side, point estimate below);
* the difference a study of this n would detect with 80 % power (:func:`detectable_difference`);
* for a swept side, the same difference per swept point and per value of each swept field
  (pooled over the other fields' values): exploratory, not corrected for multiplicity;
* across ranges, the change of the difference from the fully observed range to the most
  limited one (does the gain grow when agents see less?), with a Welch-type interval.

The verdict sentence says "A beats B" or "B beats A" only when the interval excludes 0, and
otherwise "no detectable difference at this n", with the detectable difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from kaleibench.analysis import stats
from kaleibench.analysis.scores import Results, score_matrices

POWER = 0.8
"""Target power of :func:`detectable_difference`."""
FULL = "full observation"


# ------------------------------------------------------------------------------- statistics
def welch_interval(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> stats.Interval:
    """``mean(a) − mean(b)`` with a Welch t interval (NaN bounds below 2 values per side).

    Examples:
        >>> i = welch_interval(np.array([1.0, 1.2, 1.1]), np.array([0.0, 0.2, 0.1]))
        >>> round(i.point, 3), i.low > 0.5
        (1.0, True)
    """
    from scipy import stats as sps

    a, b = np.asarray(a, float), np.asarray(b, float)
    point = float(a.mean() - b.mean()) if a.size and b.size else math.nan
    if a.size < 2 or b.size < 2:
        return stats.Interval(point, math.nan, math.nan)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return stats.Interval(point, point, point)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, dof)) * se
    return stats.Interval(point, point - half, point + half)


@lru_cache(maxsize=32)
def _welch_draws(n_a: int, n_b: int, alpha: float, reps: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal data sets of sizes (n_a, n_b): per data set the mean difference and the
    Welch interval's half-width, both in units of the common SD (they scale with it)."""
    from scipy import stats as sps

    rng = np.random.default_rng(np.random.SeedSequence([seed, n_a, n_b, 0x90E1]))
    za, zb = rng.standard_normal((reps, n_a)), rng.standard_normal((reps, n_b))
    va, vb = za.var(axis=1, ddof=1) / n_a, zb.var(axis=1, ddof=1) / n_b
    dof = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    half = sps.t.ppf(1 - alpha / 2, dof) * np.sqrt(va + vb)
    return za.mean(axis=1) - zb.mean(axis=1), half


def power(diff: float, sd: float, n_a: int, n_b: int, alpha: float = 0.05,
          reps: int = 20_000, seed: int = 0) -> float:
    """Probability that the headline's level-``alpha`` Welch interval excludes 0 when the true
    difference is ``diff`` and both sides' runs are normal with SD ``sd``.

    Statistical choice: simulated (``reps`` seeded data sets, Monte Carlo error ≤ 0.004), not
    the noncentral-t formula of the pooled t test, because Welch's interval estimates its dof and
    is less powerful at small or unbalanced n (3 + 3 runs, SD 0.05, difference 0.1: 0.36
    simulated against 0.46 from the formula; 8 + 8, SD 0.06: 0.86 against 0.87).

    Examples:
        >>> round(power(0.1, 0.05, 8, 8), 2)
        0.96
    """
    if n_a < 2 or n_b < 2:
        return math.nan
    if sd == 0.0:
        return 1.0 if diff != 0 else 0.0
    shift, half = _welch_draws(n_a, n_b, alpha, reps, seed)
    return float(np.mean(np.abs(diff / sd + shift) > half))


def detectable_difference(sd: float, n_a: int, n_b: int, alpha: float = 0.05,
                          target: float = POWER) -> float:
    """The smallest true difference detected with probability ``target`` (see :func:`power`;
    the same simulated data sets at every difference, so power rises monotonically with it).

    Examples:
        >>> round(detectable_difference(0.05, 8, 8), 2)
        0.08
    """
    if n_a < 2 or n_b < 2 or not math.isfinite(sd):
        return math.inf
    if sd == 0.0:
        return 0.0
    low, high = 0.0, 1.0
    while power(high * sd, sd, n_a, n_b, alpha) < target:
        high *= 2
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if power(mid * sd, sd, n_a, n_b, alpha) < target else (low, mid)
    return high * sd


# ------------------------------------------------------------------------------- structure
def members(variants: list[str], side: str) -> list[str]:
    """The variants of ``side``: ``side`` itself and its ``side+field=value`` sweep points."""
    return [v for v in variants if v == side or v.startswith(side + "+")]


def swept_values(variant: str, side: str) -> dict[str, str]:
    """``{field: value}`` of a sweep point's name (``alma-mine+mi_weight=0.001`` ->
    ``{"mi_weight": "0.001"}``); empty for the base or a shortened (hashed) name."""
    rest = variant[len(side):]
    out: dict[str, str] = {}
    for part in rest.split("+")[1:]:
        if "=" not in part:
            return {}
        key, value = part.split("=", 1)
        out[key] = value
    return out


def sight_radius(task_id: str) -> float | None:
    """The task's sight radius, None if fully observed or not a registered task."""
    from kaleibench.envs import tasks

    try:
        return tasks.get(task_id).sight_radius
    except KeyError:
        return None


def ranges(task_ids: list[str]) -> list[tuple[str, list[str]]]:
    """Tasks grouped by observation range: full observation first, then decreasing radii."""
    radii = {t: sight_radius(t) for t in task_ids}
    order = sorted({r for r in radii.values() if r is not None}, reverse=True)
    groups = [(FULL, [t for t in task_ids if radii[t] is None])]
    groups += [(f"sight {r}", [t for t in task_ids if radii[t] == r]) for r in order]
    return [(label, ts) for label, ts in groups if ts]


@dataclass(frozen=True)
class Contrast:
    """A vs B on one observation range."""

    range: str
    tasks: list[str]
    a: str
    n_a: int
    n_b: int
    diff: stats.Interval
    poi: stats.Interval
    sd: float
    detectable: float

    @property
    def verdict(self) -> str:
        """``"A"``, ``"B"``, ``"none"`` (interval includes 0) or ``"n/a"`` (no interval)."""
        if not (math.isfinite(self.diff.low) and math.isfinite(self.diff.high)):
            return "n/a"
        if self.diff.low > 0:
            return "A"
        if self.diff.high < 0:
            return "B"
        return "none"


@dataclass(frozen=True)
class Headline:
    """Everything the headline section shows."""

    a: str
    b: str
    a_members: list[str]
    b_members: list[str]
    contrasts: list[Contrast]  # pooled A vs B per range
    points: list[Contrast] = field(default_factory=list)  # each A sweep point vs B
    effects: list[tuple[str, str, Contrast]] = field(default_factory=list)  # field, value, ...
    trend: stats.Interval | None = None  # diff(most limited range) − diff(full)
    trend_ranges: tuple[str, str] = ("", "")
    confidence: float = 0.95

    def sentences(self) -> list[str]:
        """What the data support, one sentence per range, then the trend."""
        out = []
        for c in self.contrasts:
            where = f"On {c.range} ({', '.join(c.tasks)})"
            n = f"n = {c.n_a} runs of {self.a} and {c.n_b} of {self.b}"
            diff = f"{c.diff.point:+.3f} [{c.diff.low:+.3f}, {c.diff.high:+.3f}]"
            if c.verdict == "A":
                out.append(f"{where}, {self.a} beats {self.b}: the normalised score is higher by "
                           f"{diff} ({n}).")
            elif c.verdict == "B":
                out.append(f"{where}, {self.b} beats {self.a}: {self.a}'s normalised score "
                           f"differs by {diff} ({n}).")
            elif c.verdict == "none":
                out.append(f"{where}: no detectable difference at this n ({n}); the difference "
                           f"is {diff}, and a true difference of {c.detectable:.3f} would be "
                           f"detected with {POWER:.0%} power at this n and spread.")
            else:
                out.append(f"{where}: too few runs for an interval ({n}); the point difference "
                           f"is {c.diff.point:+.3f} — no conclusion.")
        if self.trend is not None:
            full, least = self.trend_ranges
            t = self.trend
            span = f"{t.point:+.3f} [{t.low:+.3f}, {t.high:+.3f}]"
            if math.isfinite(t.low) and t.low > 0:
                out.append(f"The gain of {self.a} over {self.b} is larger on {least} than on "
                           f"{full}: {span}.")
            elif math.isfinite(t.high) and t.high < 0:
                out.append(f"The gain of {self.a} over {self.b} is smaller on {least} than on "
                           f"{full}: {span}.")
            else:
                out.append(f"Whether the gain changes from {full} to {least} is not detectable "
                           f"at this n: {span}.")
        return out


def _range_rows(matrices: dict[str, np.ndarray], names: list[str], cols: list[int]) -> np.ndarray:
    """Per-run range aggregates (mean over the range's tasks) of the pooled ``names``:
    (runs, len(cols)) rows, runs lacking any of the range's tasks dropped."""
    rows = [matrices[v][:, cols] for v in names]
    if not rows:
        return np.zeros((0, len(cols)))
    stacked = np.concatenate(rows, axis=0)
    return stacked[np.isfinite(stacked).all(axis=1)]


def _contrast(label: str, tasks: list[str], a_name: str, a_rows: np.ndarray, b_rows: np.ndarray,
              b_name: str, seed: int, reps: int, confidence: float) -> Contrast:
    a_mean, b_mean = a_rows.mean(axis=1), b_rows.mean(axis=1)
    diff = welch_interval(a_mean, b_mean, confidence)
    if a_rows.shape[0] and b_rows.shape[0]:
        poi = stats.report_poi_against({a_name: a_rows, b_name: b_rows}, b_name, seed, reps,
                                       confidence)[a_name]
    else:
        poi = stats.Interval(math.nan, math.nan, math.nan)
    parts = [x for x in (a_mean, b_mean) if x.size >= 2]
    sd = float(np.sqrt(np.mean([x.var(ddof=1) for x in parts]))) if parts else math.nan
    return Contrast(label, tasks, a_name, a_mean.size, b_mean.size, diff, poi, sd,
                    detectable_difference(sd, a_mean.size, b_mean.size, 1 - confidence))


def _trend(first: Contrast, last: Contrast, rows: dict[str, tuple[np.ndarray, np.ndarray]],
           confidence: float) -> stats.Interval:
    """``diff(last) − diff(first)`` with a t interval (Welch–Satterthwaite dof over the four
    independent samples: every (variant, task, seed) is its own run)."""
    from scipy import stats as sps

    samples = [*rows[last.range], *rows[first.range]]
    if any(s.size < 2 for s in samples):
        return stats.Interval(last.diff.point - first.diff.point, math.nan, math.nan)
    parts = [s.var(ddof=1) / s.size for s in samples]
    se = math.sqrt(sum(parts))
    point = last.diff.point - first.diff.point
    if se == 0.0:
        return stats.Interval(point, point, point)
    dof = sum(parts) ** 2 / sum(p**2 / (s.size - 1) for p, s in zip(parts, samples, strict=True))
    half = float(sps.t.ppf(0.5 + confidence / 2, dof)) * se
    return stats.Interval(point, point - half, point + half)


def _swept_groups(names: list[str], side: str) -> list[tuple[str, str, list[str]]]:
    """``(field, value, sweep points with that value)`` for every field with ≥ 2 values."""
    by_field: dict[str, dict[str, list[str]]] = {}
    for v in names:
        for key, value in swept_values(v, side).items():
            by_field.setdefault(key, {}).setdefault(value, []).append(v)
    return [(key, value, group) for key, groups in sorted(by_field.items()) if len(groups) > 1
            for value, group in groups.items()]


def compute_headline(results: Results, a: str, b: str, kind: str = "final", seed: int = 0,
                     reps: int = 50_000, confidence: float = 0.95) -> Headline:
    """The headline of ``a`` vs ``b`` (variant names or sweep bases) on ``results``.

    Raises:
        ValueError: if a side has no variant in the results or the suite has no bounds.
    """
    variants = list(results.suite.variants)
    a_members, b_members = members(variants, a), members(variants, b)
    overlap = set(a_members) & set(b_members)
    a_members = [v for v in a_members if v not in overlap or v == a]
    b_members = [v for v in b_members if v not in overlap or v == b]
    for side, found in ((a, a_members), (b, b_members)):
        if not found:
            raise ValueError(f"compare: no variant `{side}` (or `{side}+...` sweep point) among "
                             f"{variants}")
    if not results.suite.has_bounds:
        raise ValueError("compare: the headline needs normalisation bounds for every task")
    matrices = score_matrices(results, kind, normalised=True)
    task_ids = results.suite.task_ids
    contrasts, points, effects = [], [], []
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for label, tasks in ranges(task_ids):
        cols = [task_ids.index(t) for t in tasks]
        a_rows, b_rows = _range_rows(matrices, a_members, cols), _range_rows(matrices,
                                                                             b_members, cols)
        c = _contrast(label, tasks, a, a_rows, b_rows, b, seed, reps, confidence)
        contrasts.append(c)
        rows[label] = (a_rows.mean(axis=1), b_rows.mean(axis=1))
        if len(a_members) > 1:
            for v in a_members:
                points.append(_contrast(label, tasks, v, _range_rows(matrices, [v], cols), b_rows,
                                        b, seed, reps, confidence))
        for key, value, names in _swept_groups(a_members, a):
            effects.append((key, value, _contrast(label, tasks, f"{a}+{key}={value}",
                                                  _range_rows(matrices, names, cols), b_rows, b,
                                                  seed, reps, confidence)))
    trend, trend_ranges = None, ("", "")
    if len(contrasts) > 1 and contrasts[0].range == FULL:
        trend = _trend(contrasts[0], contrasts[-1], rows, confidence)
        trend_ranges = (contrasts[0].range, contrasts[-1].range)
    return Headline(a, b, a_members, b_members, contrasts, points, effects, trend, trend_ranges,
                    confidence)


# ------------------------------------------------------------------------------- rendering
def _fmt(i: stats.Interval) -> str:
    if not (math.isfinite(i.low) and math.isfinite(i.high)):
        return f"{i.point:+.3f}" if math.isfinite(i.point) else "—"
    return f"{i.point:+.3f} [{i.low:+.3f}, {i.high:+.3f}]"


def _poi(i: stats.Interval) -> str:
    if not math.isfinite(i.point):
        return "—"
    if not (math.isfinite(i.low) and math.isfinite(i.high)):
        return f"{i.point:.2f} (point)"
    return f"{i.point:.2f} [{i.low:.2f}, {i.high:.2f}]"


def _table(rows: list[tuple[str, str, Contrast]], first: str, second: str) -> list[str]:
    out = [f"| {first} | {second} | n A / n B | A − B (normalised) | P(A > B) | detectable |",
           "|---|---|---|---|---|---|"]
    for x, y, c in rows:
        out.append(f"| {x} | {y} | {c.n_a} / {c.n_b} | {_fmt(c.diff)} | {_poi(c.poi)} | "
                   f"{c.detectable:.3f} |")
    return out


def render_headline(h: Headline) -> list[str]:
    """Markdown lines of the headline section."""
    pct = f"{h.confidence:.0%}"
    lines = [f"## Headline: {h.a} vs {h.b}", ""]
    lines += [" ".join(h.sentences()), ""]
    sides = f"A = {h.a} ({', '.join(h.a_members)}); B = {h.b} ({', '.join(h.b_members)})"
    lines += [sides + ". Each run's normalised score is averaged over the tasks of a range; "
              f"A − B is the difference of means with a {pct} Welch t interval; P(A > B) is the "
              "probability of improvement (bootstrap interval from "
              f"{stats.MIN_BOOTSTRAP_N} runs per side, point estimate below); *detectable* is "
              f"the true difference found with {POWER:.0%} power at this n and spread.", ""]
    lines += _table([(c.range, ", ".join(c.tasks), c) for c in h.contrasts], "range", "tasks")
    lines.append("")
    if h.trend is not None:
        lines += [f"Change of A − B from {h.trend_ranges[0]} to {h.trend_ranges[1]}: "
                  f"{_fmt(h.trend)}.", ""]
    if h.effects:
        lines += ["### Effect of each swept field (A's points pooled over the other fields; "
                  "exploratory, no multiplicity correction)", ""]
        lines += _table([(f"{k}={v}", c.range, c) for k, v, c in h.effects], "field", "range")
        lines.append("")
    if h.points:
        lines += ["### Every point of A vs B (exploratory, no multiplicity correction)", ""]
        lines += _table([(c.a, c.range, c) for c in h.points], "variant", "range")
        lines.append("")
    return lines
