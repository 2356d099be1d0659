"""``kaleibench status``: one line per run folder (state, steps, last eval, ETA).

Every row is built on its own: a malformed file (not JSON, not an object, not UTF-8, failing
its checksum) is named in that row and the other rows are still printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kaleibench.harness.integrity import POLICY_FILES, SEALED_FILES, verify_files
from kaleibench.harness.runner import FINAL_KEYS, is_alive
from kaleibench.utils import io


def file_problems(run_dir: Path, status: dict[str, Any] | None = None) -> list[str]:
    """Corrupt or missing files of a run folder, each named (empty list = healthy).

    With a completed run's ``status``, the files it records checksums for are verified too.
    """
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
            data = io.read_json_object(final)
            missing = [k for k in FINAL_KEYS if k not in data]
            if missing:
                problems.append(f"final.json: missing {missing}")
        except (OSError, ValueError):
            problems.append("final.json: corrupt JSON")
    if status is not None and status.get("state") == "completed":
        for name in SEALED_FILES:
            if name in POLICY_FILES and not (run_dir / name).is_file():
                continue  # kept without policies (scores and logs only): not a defect
            try:
                verify_files(run_dir, status, (name,))
            except ValueError as exc:
                problems.append(f"{name}: {getattr(exc, 'problem', exc)}")
        if not metrics.exists():
            problems.append("metrics.jsonl missing")
    return problems


def _is_json(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # includes UnicodeDecodeError
        return False


def _row(run_dir: Path) -> tuple[str, str]:
    try:
        status = io.read_json_object(run_dir / "status.json")
    except FileNotFoundError:
        return "unknown", "status.json missing"
    except (OSError, ValueError) as exc:
        return "corrupt", f"status.json: {exc}"
    problems = file_problems(run_dir, status)
    try:
        spec = io.read_json_object(run_dir / "spec.json")
    except (OSError, ValueError) as exc:
        spec = {}
        problems.append(f"spec.json: {exc}")
    state = str(status.get("state"))
    if state == "running" and not is_alive(status):
        state = "stale"
    evals = [r for r in io.read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
    last = evals[-1].get("return_mean") if evals else None
    last_s = f"{last:.2f}" if isinstance(last, int | float) else "-"
    t_env, t_max = _int(status.get("t_env")), _int(spec.get("t_max"))
    if state == "completed" and not (run_dir / "final.json").exists():
        problems.append("final.json missing")
    detail = f"{t_env}/{t_max} steps  last eval {last_s}"
    if status.get("error"):
        detail += f"  error: {str(status['error']).splitlines()[0][:80]}"
    for note in status.get("notes") or []:
        detail += f"  note: {str(note)[:120]}"
    return state, detail + ("  " + "; ".join(problems) if problems else "")


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def print_status(root: Path) -> int:
    """Print the table; exit 2 if ``root`` is not a results folder."""
    if not root.is_dir():
        print(f"kaleibench: error: {root} is not a folder")
        return 2
    run_dirs = sorted(p for p in root.glob("*/*/seed_*") if p.is_dir())
    if not run_dirs:
        print(f"no runs under {root}")
        return 0
    for run_dir in run_dirs:
        try:
            state, detail = _row(run_dir)
        except Exception as exc:  # noqa: BLE001 - one unreadable folder must not hide the rest
            state, detail = "unreadable", f"{type(exc).__name__}: {exc}"
        print(f"{state:<11} {run_dir.relative_to(root)}  {detail}")
    from kaleibench.harness.cost import status_summary

    for line in status_summary(root):
        print(line)
    return 0
