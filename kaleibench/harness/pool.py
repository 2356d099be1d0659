"""The local process pool: one cell per worker at a time, a cost-weighted ETA, and a Ctrl-C that
stops at once.

Cells are handed to the pool only when a worker is free, so nothing waits in the pool's queue:
after the first Ctrl-C no new cell starts. The cells that are running checkpoint and stop (the
terminal's Ctrl-C reaches every worker; each run turns it into a checkpoint at the end of its
current iteration), and the cells that never started are reported as ``pending``. A second
Ctrl-C stops the workers immediately (a run then resumes from its last periodic checkpoint).

Idle workers ignore Ctrl-C, so a worker between two cells never dies of it and takes the pool
(and the running cells' results) with it.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from kaleibench.harness.cost import CellProgress, format_eta, grid_eta, read_cell
from kaleibench.train.spec import RunSpec
from kaleibench.utils.interrupt import GracefulStop

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]"


def _ignore_sigint() -> None:
    """Pool initializer: idle workers ignore SIGINT (a running cell installs its own handler)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest(GracefulStop):
    """First SIGINT: stop dispatching and say so; second: raise ``KeyboardInterrupt``."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._running: Callable[[], int] = lambda: 0
        super().__init__()

    def on_first(self) -> None:
        """Tell the user what happens now."""
        self._say(f"stopping… no new cells start; waiting for {self._running()} running cell(s) "
                  "to checkpoint (Ctrl-C again to stop at once)")


def _say(text: str) -> None:
    print(f"\n{text}", file=sys.stderr, flush=True)


def run_pool(todo: Sequence[RunSpec], root: Path, workers: int, progress: bool,
             run_cell: Callable[..., Any], outcome: Callable[..., Any]) -> list[Any]:
    """Run ``todo`` on ``workers`` processes; returns one outcome per cell.

    ``run_cell(spec, root, progress)`` runs one cell in a worker and returns its outcome;
    ``outcome(run_id, state, detail)`` builds the outcome of a cell the pool did not finish.
    """
    queue = list(todo)
    running: dict[Future[Any], RunSpec] = {}
    results: list[Any] = []
    stop = StopRequest(_say)
    stop._running = lambda: len(running)  # noqa: SLF001
    bar = _Bar(todo, root, workers) if progress else None
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_ignore_sigint)
    try:
        while queue or running:
            while queue and len(running) < workers and not stop.requested:
                spec = queue.pop(0)
                running[pool.submit(run_cell, spec, str(root), False)] = spec
            if not running:
                break
            done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                spec = running.pop(fut)
                try:
                    results.append(fut.result())
                except Exception as exc:  # noqa: BLE001 - e.g. a worker process died
                    results.append(outcome(spec.run_id, "failed", f"{type(exc).__name__}: "
                                                                  f"{exc}"))
            if bar is not None:
                bar.update(running.values())
    except KeyboardInterrupt:  # the second Ctrl-C: stop the workers now
        _stop_now(pool, running, results, outcome)
    finally:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:  # the second Ctrl-C while the last cells checkpoint
            _stop_now(pool, running, results, outcome)
            pool.shutdown(wait=False, cancel_futures=True)
        stop.restore()
        if bar is not None:
            bar.close()
    for spec in queue:
        results.append(outcome(spec.run_id, "pending", "not started (stopped)"))
    return results


def _stop_now(pool: ProcessPoolExecutor, running: dict[Future[Any], RunSpec],
              results: list[Any], outcome: Callable[..., Any]) -> None:
    """Terminate the workers; their cells are interrupted (they resume from a checkpoint)."""
    processes = getattr(pool, "_processes", None) or {}
    for proc in list(processes.values()):
        proc.terminate()
    for spec in running.values():
        results.append(outcome(spec.run_id, "interrupted",
                               "stopped at once; resumes from its last checkpoint"))
    running.clear()


class _Bar:
    """The grid bar: env steps of the cells in this invocation, and an ETA weighted by each
    variant's measured speed (:mod:`kaleibench.harness.cost`)."""

    def __init__(self, todo: Sequence[RunSpec], root: Path, workers: int) -> None:
        from tqdm import tqdm

        self.todo, self.root, self.workers = list(todo), root, workers
        self.learns = {s.variant.name: s.variant.learns for s in self.todo}
        total = sum(s.t_max for s in self.todo if self.learns[s.variant.name])
        interval = 0.5 if sys.stderr.isatty() else 30.0
        self.bar = tqdm(total=total, desc="grid", dynamic_ncols=True, mininterval=interval,
                        bar_format=BAR_FORMAT)
        self.last = 0.0

    def cells(self) -> list[CellProgress]:
        """Progress of every cell of this invocation."""
        return [read_cell(s.run_dir(self.root), s.variant.name, s.t_max,
                          self.learns[s.variant.name], s.task) for s in self.todo]

    def update(self, running: Any) -> None:
        """Refresh at most once a second."""
        if time.time() - self.last < 1.0:
            return
        self.last = time.time()
        cells = self.cells()
        steps = sum(c.t_env for c in cells)
        eta, _ = grid_eta(cells, self.workers)
        done = sum(1 for c in cells if c.state in ("completed", "failed"))
        self.bar.update(min(steps, self.bar.total) - self.bar.n)
        self.bar.set_postfix_str(f"runs {done}/{len(cells)}, ETA {format_eta(eta)}",
                                 refresh=False)

    def close(self) -> None:
        """Final refresh and close."""
        self.last = 0.0
        self.update(())
        self.bar.close()
