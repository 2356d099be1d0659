"""What a results folder already holds, compared with what a ``run`` asks for.

``kaleibench run`` reuses a folder: completed cells are skipped, interrupted ones resume. That is
what a user wants when re-running the same command, and a trap when the command differs in a
way the run id does not capture (the env backend, an output sink) or captures (a changed config,
budget or override, which cannot share the folder). :func:`inspect_folder` reads the folder
before anything runs or is written, so the CLI can refuse a conflicting request (exit 2) or say
what will be skipped and how to get what was asked instead.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaleibench.harness.grid import Cell

_RUN_KEYS = ("seed", "t_max", "n_envs", "eval_interval", "eval_episodes", "algo")
_SINK_FILES = {"tensorboard": "tensorboard", "csv": "metrics.csv"}


@dataclass
class FolderCheck:
    """The result of :func:`inspect_folder`."""

    root: Path
    conflicts: list[tuple[str, list[str]]] = field(default_factory=list)
    """(run folder, differences) for cells whose folder holds another run."""
    states: Counter[str] = field(default_factory=Counter)
    """How many requested cells the folder holds per state (completed, failed, ...)."""
    backend: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(state, recorded backend, requested backend) for cells that ran on another backend."""
    missing_sink: Counter[str] = field(default_factory=Counter)
    """Completed cells that lack the output of a requested sink (tensorboard, csv)."""

    def conflict_message(self) -> str:
        """Why the request cannot use this folder, and what to do."""
        folder, diffs = self.conflicts[0]
        more = f" (and {len(self.conflicts) - 1} more cells)" if len(self.conflicts) > 1 else ""
        return (f"{self.root} already holds different runs for what you asked: {folder}{more} "
                f"differs in {'; '.join(diffs[:6])}. Nothing was run or changed. Use another "
                f"folder (e.g. --out {alternative(self.root)}), or delete {self.root} to start "
                "over.")

    def notes(self) -> list[str]:
        """Lines to print before running: what is reused, and how to get what was asked."""
        out: list[str] = []
        for (state, had, asked), n in sorted(self.backend.items()):
            doing = ("are skipped, not re-run" if state == "completed"
                     else "will resume on the new backend")
            out.append(f"note: {n} {state} cell(s) in {self.root} ran with --backend {had}; "
                       f"you asked for {asked}: they {doing}. For a clean {asked} run use "
                       f"--out {alternative(self.root, asked)}")
        for sink, n in sorted(self.missing_sink.items()):
            out.append(f"note: {n} completed cell(s) in {self.root} were run without --{sink} "
                       f"and are skipped, so they get no {sink} output. To get it, use "
                       f"--out {alternative(self.root, sink)} (a fresh folder)")
        done = self.states.get("completed", 0)
        if done:
            out.append(f"note: {done} cell(s) already completed in {self.root} are reused "
                       "(skipped); use another --out to run them again")
        return out


def alternative(root: Path, suffix: str = "2") -> Path:
    """A sibling folder name that does not exist yet: ``<root>-<suffix>[-k]``."""
    candidate = root.with_name(f"{root.name}-{suffix}")
    k = 2
    while candidate.exists():
        candidate = root.with_name(f"{root.name}-{suffix}-{k}")
        k += 1
    return candidate


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _differences(recorded: dict[str, Any], spec_json: dict[str, Any]) -> list[str]:
    diffs = []
    old_cfg, new_cfg = recorded.get("config") or {}, spec_json.get("config") or {}
    for key in sorted(set(old_cfg) | set(new_cfg)):
        if old_cfg.get(key) != new_cfg.get(key):
            diffs.append(f"config {key}: {old_cfg.get(key)!r} in the folder, "
                         f"{new_cfg.get(key)!r} asked")
    for key in _RUN_KEYS:
        if key in recorded and recorded.get(key) != spec_json.get(key):
            diffs.append(f"{key}: {recorded.get(key)!r} in the folder, {spec_json.get(key)!r} "
                         "asked")
    if recorded.get("task_spec") not in (None, spec_json.get("task_spec")):
        diffs.append("task spec (another task version)")
    return diffs or ["run id " + str(recorded.get("run_id"))]


def inspect_folder(cells: Sequence[Cell], root: str | Path, sinks: Sequence[str] = ()) -> \
        FolderCheck:
    """Compare every runnable cell with what ``root`` holds for it (reads only)."""
    check = FolderCheck(Path(root))
    if not check.root.is_dir():
        return check
    for cell in cells:
        if cell.na_reason:
            continue
        spec = cell.spec
        run_dir = spec.run_dir(root)
        recorded = _read(run_dir / "spec.json")
        status = _read(run_dir / "status.json")
        if recorded is None or status is None:
            continue
        if recorded.get("config_hash") != spec.config_hash:
            wanted = {"config": spec.variant.to_json()["config"], "seed": spec.seed,
                      "t_max": spec.t_max, "n_envs": spec.n_envs, "algo": spec.variant.algo,
                      "eval_interval": spec.eval_interval, "eval_episodes": spec.eval_episodes,
                      "task_spec": spec.identity()["task"]}
            check.conflicts.append((str(run_dir.relative_to(root)),
                                    _differences(recorded, wanted)))
            continue
        state = str(status.get("state"))
        if state == "completed" and not (run_dir / "final.json").exists():
            state = "incomplete"
        check.states[state] += 1
        had = recorded.get("backend")
        if had and had != spec.backend and state in ("completed", "interrupted", "running"):
            check.backend[(state, str(had), spec.backend)] += 1
        if state == "completed":
            for sink in sinks:
                name = _SINK_FILES.get(sink)
                if name and not (run_dir / name).exists():
                    check.missing_sink[sink] += 1
    return check


GRID_KEYS = ("name", "version", "tasks", "t_max", "n_envs", "eval_interval", "eval_episodes")
"""suite.json keys that every run of one results folder must share: their scores are compared
as equals (same tasks and bounds, budget and evaluation)."""


def merged_suite_json(root: str | Path, asked: dict[str, Any]) -> dict[str, Any]:
    """The suite.json to write for a run of ``asked`` into ``root``.

    A folder that already has a suite.json keeps its description: the variants (and seeds) of
    this run are added to its lists, so a new variant run into a copy of committed results is
    compared with the baselines there and the folder still names its own suite. A run whose
    grid differs (another suite, budget, evaluation, task list or bounds) cannot share the
    folder.

    Raises:
        ValueError: Naming the file and the first differing key (the CLI exits with code 2).
    """
    path = Path(root) / "suite.json"
    if not path.exists():
        return asked
    from kaleibench.utils.io import read_json_object

    try:
        have = read_json_object(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}); nothing was run. Use another --out, "
                         "or delete the folder to start over.") from exc
    for key in GRID_KEYS:
        if have.get(key) != asked.get(key):
            raise ValueError(
                f"{path}: `{key}` is {json.dumps(have.get(key))[:120]} there, this run asks for "
                f"{json.dumps(asked.get(key))[:120]}. Runs of a different suite, budget, "
                "evaluation or task list cannot share a results folder (their scores would be "
                f"compared as equals). Nothing was run. Use another --out (e.g. "
                f"{alternative(Path(root))}).")
    merged = dict(have)
    merged["variants"] = list(dict.fromkeys([*have.get("variants", []), *asked["variants"]]))
    merged["seeds"] = list(dict.fromkeys([*have.get("seeds", []), *asked["seeds"]]))
    if "compare" not in merged and "compare" in asked:
        merged["compare"] = asked["compare"]
    return merged
