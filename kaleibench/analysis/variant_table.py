"""The report's "Variants" section: what each variant is and what it cost.

A comparison is only readable if the reader knows what differs between the rows. For each
variant the table names its algorithm class, its config's difference from that class's defaults
(or, for a variant made with ``--set``/``--sweep``, its base variant and the overrides), the
number of completed runs, and its compute: mean CPU seconds and wall seconds per run and the
training speed in env steps per wall second, read from the runs themselves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kaleibench.analysis.scores import Results, Run
from kaleibench.train.timing import cumulative_cpu_time
from kaleibench.utils.io import read_jsonl


def config_diff(spec: dict[str, Any]) -> dict[str, Any]:
    """Fields of ``spec["config"]`` that differ from the algorithm class's defaults.

    For an overridden variant the recorded overrides are returned instead (the diff from its
    base variant). An unloadable algorithm gives ``{"?": ...}`` rather than an error.
    """
    if spec.get("overrides"):
        return dict(spec["overrides"])
    config = spec.get("config") or {}
    try:
        from kaleibench.config import to_dict
        from kaleibench.registry import load_entry_point

        algo: Any = load_entry_point(str(spec.get("algo")))
        defaults = to_dict(algo.Config())  # the class's own defaults
    except Exception as exc:  # noqa: BLE001 - a plugin that is not installed here
        return {"?": f"cannot load {spec.get('algo')}: {type(exc).__name__}"}
    if defaults.get("timeout_is_terminal", False) is None:  # decided by the task by default
        task = spec.get("task_spec") or {}
        defaults["timeout_is_terminal"] = task.get("time_limit_is_task", True)
    return {k: v for k, v in config.items() if defaults.get(k, object()) != v}


def _run_cost(run: Run) -> tuple[float, float, float]:
    """(CPU seconds, wall seconds, env steps per wall second) of a completed run; NaN if
    unknown (runs written before metrics rows carried ``cpu_time``)."""
    final = run.final or {}
    wall = float(final.get("wall_time_s", math.nan))
    speed = float(final.get("steps_per_second", math.nan))
    cpu = float(final.get("cpu_time_s", math.nan))
    if not math.isfinite(cpu):  # older runs: from the metrics rows, summed over restarts
        path = run.path / "metrics.jsonl"
        cpu = cumulative_cpu_time(read_jsonl(path)) if path.exists() else math.nan
    return cpu, wall, speed


def _fmt(value: float, digits: int = 0) -> str:
    return "–" if not math.isfinite(value) else f"{value:,.{digits}f}"


def variant_lines(results: Results, variants: list[str]) -> list[str]:
    """Markdown lines of the Variants section (a table and its caption)."""
    totals = np.zeros(2)  # CPU and wall seconds of every completed run
    totals_known = np.zeros(2, dtype=int)
    lines = ["## Variants", "",
             "| variant | algorithm | differs from defaults | runs | CPU s / run | "
             "wall s / run | env steps / s |", "|---|---|---|---|---|---|---|"]
    for v in variants:
        runs = [r for (rv, _, _), r in sorted(results.runs.items()) if rv == v]
        done = [r for r in runs if r.state == "completed" and r.final]
        spec = next((r.spec for r in runs if r.spec), None) or {}
        diff = config_diff(spec) if spec else {}
        base = f"`{spec['base_variant']}` + " if spec.get("base_variant") else ""
        diff_text = base + (", ".join(f"`{k}={val}`" for k, val in sorted(diff.items()))
                            or "(defaults)")
        cost = np.array([_run_cost(r) for r in done]) if done else np.full((1, 3), np.nan)
        known = np.isfinite(cost[:, :2])
        totals += np.where(known, cost[:, :2], 0.0).sum(0)
        totals_known += known.sum(0)
        with np.errstate(all="ignore"):
            cpu, wall, speed = (float(np.nanmean(c)) if np.isfinite(c).any() else math.nan
                                for c in cost.T)
        algo = str(spec.get("algo", "?")).rsplit(":", 1)[-1]
        if not spec:  # no run of this variant has started: nothing says what it is yet
            algo, diff_text = "–", "(no run started)"
        lines.append(f"| {v} | {algo} | {diff_text} | {len(done)} | {_fmt(cpu)} | "
                     f"{_fmt(wall)} | {_fmt(speed)} |")
    caption = ("What each variant is: its algorithm class and the config fields that differ "
               "from that class's defaults (for a `--set`/`--sweep` variant: its base variant "
               "and overrides); completed runs (seeds × tasks); mean cost per completed run "
               "over all tasks (CPU seconds of the run's processes and wall seconds, both over "
               "all its (re)starts; training env steps per wall second; – where the runs did "
               "not record it).")
    n_done = sum(r.state == "completed" and bool(r.final) for (rv, _, _), r in
                 results.runs.items() if rv in variants)  # fmt: skip
    total = (f"Training cost of the {n_done} completed runs: "
             f"{_hours(totals[0], totals_known[0], n_done)} CPU-hours, "
             f"{_hours(totals[1], totals_known[1], n_done)} hours of wall time (sums over "
             "runs; runs in parallel workers overlap in wall time).")
    return [*lines, "", f"*{caption}*", "", total, ""]


def _hours(seconds: float, known: int, n: int) -> str:
    """Hours to 1 decimal; ``–`` if no run recorded it, "≥" when only some did."""
    if known == 0:
        return "–"
    return f"{'' if known == n else '≥ '}{seconds / 3600:,.1f}"

