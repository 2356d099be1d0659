"""``kaleibench status``: one line per run folder (state, steps, last eval, ETA)."""

from __future__ import annotations

from pathlib import Path

from kaleibench.harness.runner import is_alive
from kaleibench.utils import io

FINAL_KEYS = ("final_return", "absolute_return", "final_returns", "t_env")


def file_problems(run_dir: Path) -> list[str]:
    """Corrupt or missing files of a run folder, each named (empty list = healthy)."""
    problems = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        lines = metrics.read_bytes().split(b"\n")
        if lines and lines[-1].strip():
            problems.append("metrics.jsonl: torn last line (no newline)")
        bad = [k + 1 for k, line in enumerate(lines) if line.strip() and not _is_json(line)]
        if bad:
            problems.append(f"metrics.jsonl: corrupt line(s) {bad[:5]}")
    final = run_dir / "final.json"
    if final.exists():
        try:
            data = io.read_json(final)
            missing = [k for k in FINAL_KEYS if k not in data]
            if missing:
                problems.append(f"final.json: missing {missing}")
        except ValueError:
            problems.append("final.json: corrupt JSON")
    return problems


def _is_json(line: bytes) -> bool:
    import json

    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _row(run_dir: Path) -> tuple[str, str]:
    problems = file_problems(run_dir)
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
    if state == "running" and not is_alive(status):
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
    from kaleibench.harness.cost import status_summary

    for line in status_summary(root):
        print(line)
    return 0
