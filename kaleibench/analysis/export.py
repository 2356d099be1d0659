"""Export a results folder: as marl-eval raw JSON, or as a copy without checkpoints and policies.

**Folder** (:func:`export_folder`): every completed (and not-applicable) run's ``spec.json``,
``status.json``, ``metrics.jsonl`` and ``final.json``, the folder's ``suite.json`` and its
``report/``, checked against their checksums on the way; no ``checkpoint.pt``, ``final.pt`` or
``best.pt``. That is what a results folder needs for ``report``, ``check``, ``reference`` and for
running new variants into it (its cells count as completed), at a few MB instead of hundreds:
the form in which kaleibench commits its own results.

**marl-eval** (Gorsane et al. 2022, arXiv:2209.10485). Schema written::

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

import os
import shutil
from pathlib import Path
from typing import Any

from kaleibench.analysis._io import atomic_write_json
from kaleibench.analysis.curves import read_metrics
from kaleibench.analysis.scores import Run, load_results

KEPT_FILES = ("spec.json", "status.json", "metrics.jsonl", "final.json")
"""The files of a run a folder export keeps (scores, logs, provenance, the checksums' seal)."""


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


def export_folder(results_dir: str | Path, out_dir: str | Path,
                  allow_incomplete: bool = False) -> list[tuple[str, str, int]]:
    """Copy ``results_dir`` to ``out_dir`` without checkpoints or policy files.

    Completed runs are verified against their checksums first (a corrupt one is refused, named),
    and the copy is built in a temporary sibling folder and renamed into place, so ``out_dir``
    either holds the whole export or does not exist.

    Args:
        results_dir: One suite's results folder.
        out_dir: Destination; must not exist yet (or be empty).
        allow_incomplete: Export even if some runs have not completed (they are left out).

    Returns:
        The grid's ``(variant, task, seed)`` cells left out (not completed), empty for a
        complete grid.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty.
        ValueError: A run is corrupt, or the grid is incomplete and ``allow_incomplete`` is off.
    """
    src, out = Path(results_dir), Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty: export into a new folder")
    results = load_results(src)
    corrupt = [r for r in results.runs.values() if r.state == "corrupt"]
    if corrupt:
        raise ValueError("refusing to export corrupt runs: "
                         + "; ".join(f"{r.path}: {r.error}" for r in corrupt))
    done = {key for key, r in results.runs.items() if r.state in ("completed", "n/a")}
    kept = [results.runs[key] for key in sorted(done)]
    missing = [(v, t, s) for v in results.suite.variants for t in results.suite.task_ids
               for s in results.suite.seeds if (v, t, s) not in done]  # fmt: skip
    if missing and not allow_incomplete:
        raise ValueError(f"{len(missing)} run(s) of {src} have not completed (first: "
                         f"{' / '.join(map(str, missing[0]))}); finish them or pass "
                         "--allow-incomplete to export the completed ones")
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for run in kept:
            dest = tmp / run.path.relative_to(src)
            dest.mkdir(parents=True)
            for name in KEPT_FILES:
                if (run.path / name).is_file():
                    shutil.copy2(run.path / name, dest / name)
        if (src / "suite.json").is_file():
            shutil.copy2(src / "suite.json", tmp / "suite.json")
        if (src / "report").is_dir():
            shutil.copytree(src / "report", tmp / "report")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return missing
