"""The statistical rule of the regression gate, as pure (vectorised) functions.

A cell (variant, task) has ``n_r`` reference scores and ``n_x`` new scores, one per seed. The gate
asks one question per cell: *did the new runs fall by more than a tolerance δ?* (δ = a fraction of
the task's random→heuristic gap; drops smaller than δ are not gated by design.)

* **Test.** One-sided Welch test with a margin, H0: μ_new ≥ μ_ref − δ against
  H1: μ_new < μ_ref − δ::

      t = (x̄ − r̄ + δ) / √(s_x²/n_x + s_r²/n_r),   p = F_ν(t)

  with the Welch–Satterthwaite ν. If both samples have zero variance the outcome is decided by
  the sign of ``x̄ − r̄ + δ`` (p = 0 or 1). With fewer than two seeds on a side the cell is
  untestable (p = NaN).
* **Family.** The p-values of all testable cells of the suite are Holm-corrected; a cell
  regressed iff its Holm-adjusted p ≤ α (family-wise error α across the suite, default 0.05).
* **Power.** The minimum detectable drop of a cell (80 % power, one-sided level α/m, the
  reference's seed SD s standing in for both samples)::

      MDD = δ + (t_{1−α/m, ν} + t_{0.8, ν}) · s · √(1/n_x + 1/n_r),   ν = ¾(n_x + n_r) − 2

  (ν sits between Welch's worst case and the pooled n_x + n_r − 2; with it the simulated power
  at the MDD is 80–83 % from n = 3 to 10 seeds and 1 to 42 cells, where the pooled value
  overclaims at 75–79 %).

  When it exceeds the drop the gate is meant to catch (``catch`` · gap) and the test did not
  reject, the cell is *inconclusive* — never a "match". With the reference's SD for both sides
  it depends only on the reference and the seed counts, so whether a gate's design is
  conclusive is known when the reference is made; new runs much noisier than the reference (an
  unstable learner whose mean may have dropped without significance) raise it, and make the
  cell inconclusive rather than "ok".
* **Collapse.** Independently of the test, a non-finite score, or a seed more than
  ``collapse`` gaps below the worst reference seed, fails and is named.

The simulation in the test-suite (and the README table) measures this rule's suite-level false
alarm rate and power at the sizes the project's gates use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

POWER = 0.8


@dataclass(frozen=True)
class GateRule:
    """Parameters of the statistical rule (stored with each reference)."""

    alpha: float = 0.05
    """Family-wise false-alarm rate over the suite's cells (Holm)."""
    tolerance: float = 0.10
    """δ as a fraction of the task's random→heuristic gap: smaller drops are not gated."""
    catch: float = 0.50
    """The drop (fraction of the gap) the gate must catch with ≥ 80 % power to be conclusive."""
    collapse: float = 3.0
    """A seed this many gaps below the worst reference seed (or non-finite) fails outright."""

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 <= self.tolerance < self.catch:
            raise ValueError(f"need 0 <= tolerance < catch, got {self.tolerance}, {self.catch}")
        if self.collapse <= 0:
            raise ValueError(f"collapse must be > 0, got {self.collapse}")


def margin_pvalues(new: np.ndarray, ref: np.ndarray, delta: float | np.ndarray) -> np.ndarray:
    """p-values of H0: μ_new ≥ μ_ref − δ (Welch, one-sided), over leading axes.

    Args:
        new: (..., n_x) new scores; ref: (..., n_r) reference scores (finite).
        delta: tolerance δ ≥ 0 (broadcast over the leading axes).

    Returns:
        (...) p-values; NaN where a side has fewer than two scores.
    """
    new, ref = np.asarray(new, dtype=float), np.asarray(ref, dtype=float)
    n_x, n_r = new.shape[-1], ref.shape[-1]
    shape = np.broadcast_shapes(new.shape[:-1], ref.shape[:-1], np.shape(delta))
    if n_x < 2 or n_r < 2:
        return np.full(shape, np.nan)
    vx, vr = new.var(-1, ddof=1) / n_x, ref.var(-1, ddof=1) / n_r
    se2 = vx + vr
    shift = new.mean(-1) - ref.mean(-1) + delta  # > 0: within tolerance
    with np.errstate(divide="ignore", invalid="ignore"):
        t = shift / np.sqrt(se2)
        df = se2**2 / (vx**2 / (n_x - 1) + vr**2 / (n_r - 1))
    p = sps.t.cdf(t, np.where(se2 > 0, df, 1.0))
    p = np.where(se2 > 0, p, np.where(shift < 0, 0.0, 1.0))  # no noise: the sign decides
    return np.broadcast_to(p, shape).astype(float)


def holm_reject(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down rejections over the last axis; NaN entries are never rejected.

    Equivalent to ``holm_bonferroni(p) <= alpha`` row by row, vectorised for simulation.
    """
    p = np.asarray(p, dtype=float)
    finite = np.isfinite(p)
    m = finite.sum(-1, keepdims=True)  # testable cells per row
    order = np.argsort(np.where(finite, p, np.inf), axis=-1, kind="stable")
    sorted_p = np.take_along_axis(p, order, -1)
    rank = np.arange(p.shape[-1])
    ok = (sorted_p <= alpha / np.maximum(m - rank, 1)) & (rank < m)
    passed = np.cumprod(ok, axis=-1).astype(bool)  # stop at the first failure
    out = np.zeros_like(passed)
    np.put_along_axis(out, order, passed, -1)
    return out


def min_detectable_drop(sd: float, n_new: int, n_ref: int, delta: float, alpha: float,
                        m: int, sd_new: float | None = None) -> float:
    """Drop caught with 80 % power at one-sided level α/m (see the module docstring).

    ``sd`` is the reference's seed SD; ``sd_new`` (default: the same) the new sample's. A check
    passes both, so that new runs far noisier than the reference (an unstable learner) make
    the cell inconclusive instead of "ok".
    """
    if n_new < 2 or n_ref < 2:
        return math.inf
    sd_new = sd if sd_new is None else max(sd, sd_new)
    nu = max(1.0, 0.75 * (n_new + n_ref) - 2)
    level = alpha / max(m, 1)
    z = sps.t.ppf(1 - level, nu) + sps.t.ppf(POWER, nu)
    return float(delta + z * math.sqrt(sd_new**2 / n_new + sd**2 / n_ref))


def collapsed_seeds(new: np.ndarray, ref: np.ndarray, gap: float, collapse: float) -> np.ndarray:
    """Mask of new seeds (..., n_x) that are non-finite or ``collapse`` gaps below min(ref)."""
    new = np.asarray(new, dtype=float)
    floor = np.min(np.asarray(ref, dtype=float), axis=-1, keepdims=True) - collapse * gap
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(new) | (new < floor)


def alarms(new: np.ndarray, ref: np.ndarray, rule: GateRule, gap: float = 1.0,
           fail_inconclusive: bool = False) -> np.ndarray:
    """Which cells fail the statistical rule: (..., m, n_x), (..., m, n_r) -> (..., m) bool.

    The same functions :func:`~kaleibench.analysis.regression.check_against_reference` applies
    per suite (regressed or collapsed; and inconclusive with ``fail_inconclusive``, as
    ``kaleibench check --fail-inconclusive``), vectorised over leading axes for simulation.
    """
    p = margin_pvalues(new, ref, rule.tolerance * gap)
    failed = holm_reject(p, rule.alpha) | collapsed_seeds(new, ref, gap, rule.collapse).any(-1)
    if fail_inconclusive:
        n_x, n_r, m = new.shape[-1], ref.shape[-1], new.shape[-2]
        sd_r = ref.std(-1, ddof=1) if n_r > 1 else np.full(ref.shape[:-1], np.inf)
        sd_x = np.maximum(new.std(-1, ddof=1), sd_r) if n_x > 1 else sd_r
        unit = min_detectable_drop(1.0, max(n_x, 2), max(n_r, 2), 0.0, rule.alpha, m)
        mdd = rule.tolerance * gap + unit * np.sqrt(sd_x**2 / n_x + sd_r**2 / n_r) / np.sqrt(
            1 / max(n_x, 2) + 1 / max(n_r, 2))
        failed |= (mdd > rule.catch * gap) if min(n_x, n_r) > 1 else True
    return failed


def simulate(rule: GateRule, m: int, n_new: int, n_ref: int, sd: float, drop: float,
             draws: int = 20_000, seed: int = 0,
             fail_inconclusive: bool = False) -> tuple[float, float]:
    """(suite false-alarm rate, power) of the rule by simulation, in units of the gap.

    Seed scores are normal with SD ``sd`` gaps. False alarm: any of ``m`` unchanged cells fails.
    Power: the first cell, whose mean fell by ``drop`` gaps, fails (the others unchanged).
    """
    rng = np.random.default_rng(seed)
    ref = rng.normal(0.0, sd, (draws, m, n_ref))
    new = rng.normal(0.0, sd, (draws, m, n_new))
    false_alarm = float(alarms(new, ref, rule, fail_inconclusive=fail_inconclusive)
                        .any(-1).mean())
    new[:, 0] -= drop
    power = float(alarms(new, ref, rule, fail_inconclusive=fail_inconclusive)[:, 0].mean())
    return false_alarm, power
