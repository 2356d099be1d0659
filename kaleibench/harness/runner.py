"""Execute grid cells: skip finished ones, resume interrupted ones, isolate failures.

``local`` runs cells in a process pool (one run per process, one torch thread each); with one
worker it runs in-process and shows the run's own progress bar.

Exclusion: the command holds the results folder's lock (:func:`lock_results`) from before its
first write to its end, and every cell is run under its own run-folder lock and re-checked
just before it starts (:func:`run_cell`), so a Ray run and a local run, or two pools, never
train one cell twice. A cell that raises, including an ``OSError`` such as a full disk, becomes
that cell's recorded failure and the grid goes on; nothing in here lets a traceback end the
command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaleibench.config import ConfigError
from kaleibench.harness.grid import Cell
from kaleibench.harness.integrity import verify_kept_files
from kaleibench.harness.lock import Lock, LockHeld, holder_alive
from kaleibench.train.loop import spec_json, write_status
from kaleibench.train.spec import RunSpec
from kaleibench.utils import io

STALE_SECONDS = 120.0
FINAL_KEYS = ("final_return", "absolute_return", "final_returns", "t_env")
log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to one cell."""

    run_id: str
    state: str  # completed | skipped | failed | n/a | busy | interrupted | pending
    detail: str = ""


@dataclass
class Summary:
    """All outcomes of one invocation."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        """Outcomes by state."""
        return Counter(o.state for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        """Cells that raised."""
        return [o for o in self.outcomes if o.state == "failed"]


def completed_problem(run_dir: Path, status: dict[str, Any]) -> str | None:
    """Why a ``completed`` run folder cannot be trusted (None if it can): final.json missing,
    corrupt or incomplete, or a file that fails the checksum status.json recorded."""
    final_path = run_dir / "final.json"
    if not final_path.is_file():
        return f"{final_path}: missing"
    try:
        final = io.read_json_object(final_path)
        verify_kept_files(run_dir, status)
    except (OSError, ValueError) as exc:  # CorruptFileError is a ValueError
        return str(exc)
    missing = [k for k in FINAL_KEYS if k not in final]
    return f"{final_path}: missing {missing}" if missing else None


def inspect_cell(spec: RunSpec, root: Path) -> tuple[str, str]:
    """(state, note): completed / failed / running (live holder) / resumable / new.

    A folder whose files cannot be trusted is ``resumable`` with a note naming the file and
    the problem (a completed run that fails its checks is re-run, never counted).

    Raises:
        ConfigError: If the folder holds another run (different config hash).
    """
    run_dir = spec.run_dir(root)
    status_path = run_dir / "status.json"
    clash_check(spec, run_dir)
    if not status_path.exists():
        leftovers = [n for n in ("final.json", "checkpoint.pt", "metrics.jsonl")
                     if (run_dir / n).exists()]
        return "new", (f"{status_path}: missing, but {', '.join(leftovers)} exist; "
                       "resuming from the checkpoint if it verifies, else from scratch"
                       if leftovers else "")
    try:
        status = io.read_json_object(status_path)
    except (OSError, ValueError) as exc:
        return "resumable", f"{exc}; status ignored"
    state = status.get("state")
    if state == "completed":
        problem = completed_problem(run_dir, status)
        return ("completed", "") if problem is None else (
            "resumable", f"completed run not trusted, re-running: {problem}")
    if state == "failed":
        return "failed", ""
    if state == "running" and is_alive(status):
        return "running", ""
    return "resumable", ""


def cell_state(spec: RunSpec, root: Path) -> str:
    """completed / failed / running (live holder) / resumable / new (see :func:`inspect_cell`)."""
    return inspect_cell(spec, root)[0]


def clash_check(spec: RunSpec, run_dir: Path) -> None:
    """Refuse a folder that holds another run (its spec.json has another config hash)."""
    try:
        recorded = io.read_json_object(run_dir / "spec.json")
    except (OSError, ValueError):
        return  # unreadable or absent: the run rewrites it on a fresh start
    if recorded.get("config_hash") != spec.config_hash:
        raise ConfigError(f"{run_dir} holds run {recorded.get('run_id')}, not {spec.run_id}: "
                          "use another --out folder")


def is_alive(status: dict[str, Any]) -> bool:
    """Whether a ``running`` status belongs to a live process: on this host, its pid exists
    and (when recorded) has the same start time, so a reused pid does not count; elsewhere,
    its heartbeat is younger than ``STALE_SECONDS``."""
    if status.get("host") == socket.gethostname() and "pid" in status:
        try:
            if int(status["pid"]) == os.getpid():
                return False
        except (TypeError, ValueError):
            return False
        return holder_alive(status)
    try:
        return time.time() - float(status.get("heartbeat", 0)) < STALE_SECONDS
    except (TypeError, ValueError):
        return False


def run_cell(spec: RunSpec, root: str, progress: bool, retry_failed: bool = True) -> Outcome:
    """Run one cell in this process under its run-folder lock; never raises an ``Exception``.

    The cell is re-checked under the lock, just before it starts: another process may have
    completed it (skipped), failed it (skipped unless ``retry_failed``) or hold it (busy).
    """
    from kaleibench.train.loop import Run

    run_dir = spec.run_dir(root)
    try:
        lock = Lock(run_dir, f"cell {spec.run_id}").acquire()
    except LockHeld as exc:
        return Outcome(spec.run_id, "busy", str(exc))
    except OSError as exc:
        return Outcome(spec.run_id, "failed", f"{run_dir}: cannot take the cell lock: {exc}")
    run: Run | None = None
    try:
        state, note = inspect_cell(spec, Path(root))
        if state == "completed":
            return Outcome(spec.run_id, "skipped", "already completed")
        if state == "failed" and not retry_failed:
            return Outcome(spec.run_id, "failed", "failed earlier; use --retry-failed")
        if state == "running":
            return Outcome(spec.run_id, "busy", "another process runs it")
        if note:
            log.warning("%s", note)
        io.remove_orphan_temps(run_dir)
        run = Run(spec, root, progress)
        run.run()
        return Outcome(spec.run_id, "completed", "; ".join(([note] if note else []) + run.notes))
    except KeyboardInterrupt:
        return Outcome(spec.run_id, "interrupted", "checkpointed; re-run the command to resume")
    except Exception as exc:  # noqa: BLE001 - isolate any failure of one run
        t_env = run.state.t_env if run is not None else None
        return _record_failure(run_dir, exc, traceback.format_exc(), spec.run_id, t_env)
    finally:
        with contextlib.suppress(OSError):
            lock.release()


def _record_failure(run_dir: Path, exc: BaseException, tb: str, run_id: str,
                    t_env: int | None) -> Outcome:
    """Record a failure in status.json, keeping the progress made (``t_env``, else what the
    status last reported); if even that write fails (e.g. the disk is full), the outcome says
    so instead of raising."""
    error = f"{type(exc).__name__}: {exc}"
    if t_env is None:
        try:
            t_env = int(io.read_json_object(run_dir / "status.json").get("t_env", 0))
        except (OSError, ValueError, TypeError):
            t_env = 0
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_status(run_dir, "failed", t_env, error=error, traceback=tb)
    except OSError as write_exc:
        error += f" (the failure could not be recorded in status.json: {write_exc})"
    return Outcome(run_id, "failed", error)


def _record_na(cell: Cell, root: Path) -> Outcome:
    run_dir = cell.spec.run_dir(root)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        io.atomic_write_json(run_dir / "spec.json", spec_json(cell.spec))
        write_status(run_dir, "n/a", 0, error=cell.na_reason)
    except OSError as exc:
        return Outcome(cell.spec.run_id, "failed", f"could not record N/A: {exc}")
    return Outcome(cell.spec.run_id, "n/a", cell.na_reason or "")


def plan(cells: Sequence[Cell], root: Path, retry_failed: bool) -> tuple[list[RunSpec], Summary]:
    """Decide per cell: record N/A, skip completed/failed/busy, or queue to (re)run."""
    summary, todo = Summary(), []
    for cell in cells:
        if cell.na_reason:
            summary.outcomes.append(_record_na(cell, root))
            continue
        state, note = inspect_cell(cell.spec, root)
        if note:
            log.warning("%s", note)
        if state == "completed":
            summary.outcomes.append(Outcome(cell.spec.run_id, "skipped", "already completed"))
        elif state == "failed" and not retry_failed:
            summary.outcomes.append(Outcome(cell.spec.run_id, "failed",
                                            "failed earlier; use --retry-failed"))
        elif state == "running":
            summary.outcomes.append(Outcome(cell.spec.run_id, "busy", "another process runs it"))
        else:
            todo.append(cell.spec)
    return todo, summary


def execute(cells: Sequence[Cell], root: str | Path, workers: int | None = None,
            retry_failed: bool = False, progress: bool = True) -> Summary:
    """Run the grid under ``root``; returns every cell's outcome."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    todo, summary = plan(cells, root, retry_failed)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(todo) <= 1:
        for k, spec in enumerate(todo):
            outcome = run_cell(spec, str(root), progress, retry_failed)
            summary.outcomes.append(outcome)
            if outcome.state == "interrupted":
                summary.outcomes += [Outcome(s.run_id, "pending", "not started (stopped)")
                                     for s in todo[k + 1:]]
                break
        return summary
    from functools import partial

    from kaleibench.harness.pool import run_pool

    cell = partial(run_cell, retry_failed=retry_failed)
    summary.outcomes += run_pool(todo, root, workers, progress, cell, Outcome)
    return summary


def execute_ray(cells: Sequence[Cell], root: str | Path, address: str | None = None,
                retry_failed: bool = False, num_cpus: int | None = None) -> Summary:
    """Run the grid on a Ray cluster (``address``, e.g. ``auto``) or a local Ray instance.

    Same RunSpecs, same per-run code (:func:`run_cell`) and the same results layout: ``root``
    must be a folder every Ray worker can write (shared storage on a real cluster).
    """
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("the ray executor needs `pip install kaleibench[ray]`") from exc
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    todo, summary = plan(cells, root, retry_failed)
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    try:
        remote: Any = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        refs = [remote.remote(spec, str(root), False, retry_failed) for spec in todo]
        for ref, spec in zip(refs, todo, strict=True):
            try:
                summary.outcomes.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - a lost worker fails its cell only
                summary.outcomes.append(Outcome(spec.run_id, "failed",
                                                f"ray task failed: {type(exc).__name__}: {exc}"))
    finally:
        if started_here:
            ray.shutdown()
    return summary


def write_suite_json(root: str | Path, suite_json: dict[str, Any]) -> None:
    """suite.json next to the runs: bounds and hash used by reports and checks."""
    io.atomic_write_json(Path(root) / "suite.json", suite_json)


def lock_results(root: str | Path) -> Lock:
    """Take the results folder's lock (creating the folder), before anything else is written.

    Raises:
        LockHeld: If another live ``run`` holds it (the message names host, pid and since).
        OSError: If the folder cannot be created or written.
    """
    lock = Lock(Path(root), "kaleibench run").acquire()
    if lock.taken_over is not None:
        log.warning("%s: recovered the stale lock of %s", lock.path, lock.taken_over)
    return lock


def prepare_results(root: str | Path, cells: Sequence[Cell], suite_json: dict[str, Any]) -> None:
    """Under the folder lock: refuse cells that clash with the folder's runs, clear orphan temp
    files, and only then write suite.json (so a refused suite leaves the folder untouched).

    Raises:
        ConfigError: Naming the run folder that holds another run.
    """
    root = Path(root)
    for cell in cells:
        clash_check(cell.spec, cell.spec.run_dir(root))
    io.remove_orphan_temps(root)
    write_suite_json(root, suite_json)
