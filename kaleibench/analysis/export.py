"""Export a results folder as marl-eval raw JSON (Gorsane et al. 2022, arXiv:2209.10485).

Schema written::

    {env: {task: {algorithm: {run_<seed>: {
        step_<k>: {"step_count": t_env, "return": [per-episode team returns]},
        ...,
        "absolute_metrics": {"return": [per-episode returns of the best params, 10x episodes]},
    }}}}}

``env`` and ``task`` come from the task id (``"mpe/spread-v0"`` -> ``"mpe"``, ``"spread-v0"``);
``step_k`` indexes the eval rows of ``metrics.jsonl`` in ``t_env`` order. Only completed runs are
exported (N/A and unfinished runs have no final scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kaleibench.analysis._io import atomic_write_json
from kaleibench.analysis.curves import read_metrics
from kaleibench.analysis.scores import Run, load_results


def _run_entry(run: Run) -> dict[str, Any]:
    by_step = {int(r["t_env"]): r for r in read_metrics(run.path) if r.get("kind") == "eval"}
    evals = [by_step[t] for t in sorted(by_step)]  # a repeated step keeps its last row
    entry: dict[str, Any] = {
        f"step_{k}": {
            "step_count": int(row["t_env"]),
            "return": [float(x) for x in row.get("returns", [row["return_mean"]])],
        }
        for k, row in enumerate(evals)
    }
    final = run.final or {}
    absolute = final.get("absolute_returns", [final.get("absolute_return")])
    entry["absolute_metrics"] = {"return": [float(x) for x in absolute if x is not None]}
    return entry


def marl_eval_dict(results_dir: str | Path) -> dict[str, Any]:
    """The marl-eval nested dict of a results folder (see the module docstring)."""
    results = load_results(results_dir)
    out: dict[str, Any] = {}
    for (variant, task, seed), run in sorted(results.runs.items()):
        if run.state != "completed" or run.final is None:
            continue
        env, _, task_name = task.partition("/")
        algos = out.setdefault(env, {}).setdefault(task_name or env, {})
        algos.setdefault(variant, {})[f"run_{seed}"] = _run_entry(run)
    return out


def export_marl_eval(results_dir: str | Path, out_file: str | Path) -> Path:
    """Write :func:`marl_eval_dict` of ``results_dir`` to ``out_file`` atomically.

    Args:
        results_dir: One suite's results folder.
        out_file: Destination JSON file (overwritten).

    Returns:
        The written path.
    """
    path = Path(out_file)
    atomic_write_json(path, marl_eval_dict(results_dir))
    return path
