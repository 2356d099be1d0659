"""Execute grid cells: skip finished ones, resume interrupted ones, isolate failures.

``local`` runs cells in a process pool (one run per process, one torch thread each); with one
worker it runs in-process and shows the run's own progress bar.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaleibench.harness.grid import Cell
from kaleibench.train.loop import spec_json, write_status
from kaleibench.train.spec import RunSpec
from kaleibench.utils import io

STALE_SECONDS = 120.0


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


def cell_state(spec: RunSpec, root: Path) -> str:
    """completed / failed / running (fresh heartbeat) / stale / resumable / new."""
    run_dir = spec.run_dir(root)
    status_path = run_dir / "status.json"
    if not status_path.exists():
        return "new"
    try:
        status = io.read_json(status_path)
        recorded = io.read_json(run_dir / "spec.json") if (run_dir / "spec.json").exists() else {}
    except ValueError:
        return "resumable"
    if recorded and recorded.get("config_hash") != spec.config_hash:
        raise ValueError(f"{run_dir} holds run {recorded.get('run_id')}, not {spec.run_id}: "
                         "use another --out folder")
    state = status.get("state")
    if state == "completed" and (run_dir / "final.json").exists():
        return "completed"
    if state == "failed":
        return "failed"
    if state == "running" and is_alive(status):
        return "running"
    return "resumable"


def is_alive(status: dict[str, Any]) -> bool:
    """Whether a ``running`` status belongs to a live process: on this host, its pid exists;
    elsewhere, its heartbeat is younger than ``STALE_SECONDS``."""
    if status.get("host") == socket.gethostname() and "pid" in status:
        try:
            os.kill(int(status["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return int(status["pid"]) != os.getpid()
    return time.time() - float(status.get("heartbeat", 0)) < STALE_SECONDS


def run_cell(spec: RunSpec, root: str, progress: bool) -> Outcome:
    """Run one cell in this process; exceptions become a recorded failure."""
    from kaleibench.train.loop import train

    run_dir = spec.run_dir(root)
    try:
        train(spec, root, progress=progress)
        return Outcome(spec.run_id, "completed")
    except KeyboardInterrupt:
        return Outcome(spec.run_id, "interrupted", "checkpointed; re-run the command to resume")
    except Exception as exc:  # noqa: BLE001 - isolate any failure of one run
        tb = traceback.format_exc()
        run_dir.mkdir(parents=True, exist_ok=True)
        t_env = 0
        write_status(run_dir, "failed", t_env, error=f"{type(exc).__name__}: {exc}", traceback=tb)
        return Outcome(spec.run_id, "failed", f"{type(exc).__name__}: {exc}")


def _record_na(cell: Cell, root: Path) -> Outcome:
    run_dir = cell.spec.run_dir(root)
    run_dir.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(run_dir / "spec.json", spec_json(cell.spec))
    write_status(run_dir, "n/a", 0, error=cell.na_reason)
    return Outcome(cell.spec.run_id, "n/a", cell.na_reason or "")


def plan(cells: Sequence[Cell], root: Path, retry_failed: bool) -> tuple[list[RunSpec], Summary]:
    """Decide per cell: record N/A, skip completed/failed/busy, or queue to (re)run."""
    summary, todo = Summary(), []
    for cell in cells:
        if cell.na_reason:
            summary.outcomes.append(_record_na(cell, root))
            continue
        state = cell_state(cell.spec, root)
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
            outcome = run_cell(spec, str(root), progress)
            summary.outcomes.append(outcome)
            if outcome.state == "interrupted":
                summary.outcomes += [Outcome(s.run_id, "pending", "not started (stopped)")
                                     for s in todo[k + 1:]]
                break
        return summary
    from kaleibench.harness.pool import run_pool

    summary.outcomes += run_pool(todo, root, workers, progress, run_cell, Outcome)
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
        remote = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        refs = [remote.remote(spec, str(root), False) for spec in todo]
        summary.outcomes.extend(ray.get(refs))
    finally:
        if started_here:
            ray.shutdown()
    return summary


def write_suite_json(root: str | Path, suite_json: dict[str, Any]) -> None:
    """suite.json next to the runs: bounds and hash used by reports and checks."""
    io.atomic_write_json(Path(root) / "suite.json", suite_json)
