"""``kaleibench status``: one line per run folder (state, steps, last eval, ETA)."""

from __future__ import annotations

import time
from pathlib import Path

from kaleibench.utils import io


def _row(run_dir: Path) -> tuple[str, str]:
    problems = []
    try:
        status = io.read_json(run_dir / "status.json")
    except (OSError, ValueError) as exc:
        return "corrupt", f"status.json: {exc}"
    try:
        spec = io.read_json(run_dir / "spec.json")
    except (OSError, ValueError) as exc:
        spec = {}
        problems.append(f"spec.json: {exc}")
    state = str(status.get("state"))
    if state == "running" and time.time() - float(status.get("heartbeat", 0)) > 120:
        state = "stale"
    evals = [r for r in io.read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
    last = f"{evals[-1]['return_mean']:.2f}" if evals else "-"
    t_env, t_max = int(status.get("t_env", 0)), int(spec.get("t_max", 0) or 0)
    if state == "completed" and not (run_dir / "final.json").exists():
        problems.append("final.json missing")
    detail = f"{t_env}/{t_max} steps  last eval {last}"
    if status.get("error"):
        detail += f"  error: {str(status['error']).splitlines()[0][:80]}"
    return state, detail + ("  " + "; ".join(problems) if problems else "")


def print_status(root: Path) -> int:
    """Print the table; exit 2 if ``root`` is not a results folder."""
    if not root.is_dir():
        print(f"kaleibench: error: {root} is not a folder")
        return 2
    run_dirs = sorted(p.parent for p in root.glob("*/*/seed_*/status.json"))
    if not run_dirs:
        print(f"no runs under {root}")
        return 0
    for run_dir in run_dirs:
        state, detail = _row(run_dir)
        print(f"{state:<11} {run_dir.relative_to(root)}  {detail}")
    return 0
