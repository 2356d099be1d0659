"""Exclusive locks on a results folder and on each run folder.

A lock is a small JSON file (``.kaleibench.lock``) naming its holder: host, pid, the process's
start time and when it was taken. It is created complete and atomically (written to a temp
file, then hard-linked to the lock name, which fails if the lock exists), so a reader never
sees a half-written lock.

A lock whose holder is dead is stale and is taken over. On the holder's own host, "dead" means
the pid no longer exists or now belongs to another process (its start time, read from
``/proc``, differs from the recorded one: pids are reused, notably after a reboot or a
container restart). A lock of another host cannot be checked that way; its holder refreshes
the file's mtime every ``REFRESH_SECONDS``, and the lock counts as stale once that is older
than ``FOREIGN_STALE_SECONDS``. Taking over a stale lock happens under ``flock`` on the folder,
so two processes that both find it stale cannot both take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = ".kaleibench.lock"
REFRESH_SECONDS = 30.0
FOREIGN_STALE_SECONDS = 600.0
log = logging.getLogger(__name__)


class LockHeld(Exception):
    """Another live process holds the lock; the message names it (host, pid, since)."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path, self.holder = path, holder
        since = holder.get("since")
        when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(since)))
                if isinstance(since, int | float) else "?")
        super().__init__(
            f"{path.parent} is in use by {holder.get('what', 'a kaleibench run')} on host "
            f"{holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {when} (lock file "
            f"{path}; if that process is gone and the lock is not recovered, delete the file)")


def process_start(pid: int) -> str | None:
    """An id of the process ``pid`` that changes when the pid is reused: boot id + start time
    in clock ticks (Linux ``/proc``); None where that is unavailable."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


def holder_alive(info: dict[str, Any], age: float | None = None) -> bool:
    """Whether the process an info mapping names (``host``, ``pid``, ``pid_start``) still runs.

    On this host: the pid exists and, when recorded, has the same start time. On another host:
    ``age`` (seconds since the holder last refreshed) is below ``FOREIGN_STALE_SECONDS``.
    """
    if info.get("host") != socket.gethostname():
        return age is not None and age < FOREIGN_STALE_SECONDS
    try:
        pid = int(info["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    recorded = info.get("pid_start")
    return not recorded or process_start(pid) in (None, recorded)


def my_identity() -> dict[str, Any]:
    """host, pid and pid_start of this process (also recorded in status.json)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid)}


@contextlib.contextmanager
def _folder_guard(folder: Path) -> Iterator[None]:
    """flock on the folder itself: serialises stale-lock takeovers (best effort where the
    file system does not support it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _read(path: Path) -> tuple[dict[str, Any] | None, float]:
    """(holder info or None if unreadable/malformed, age of the file's mtime in seconds)."""
    try:
        age = time.time() - path.stat().st_mtime
        info = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None, 0.0
    return (info if isinstance(info, dict) else None), age


class Lock:
    """An exclusive lock on ``folder`` (a results root or a run folder)."""

    def __init__(self, folder: str | Path, what: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.token = uuid.uuid4().hex
        self.taken_over: dict[str, Any] | None = None
        """The stale holder this lock replaced, if any (for a warning)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Lock:
        """Take the lock or raise :class:`LockHeld`; a stale lock is taken over."""
        self.folder.mkdir(parents=True, exist_ok=True)
        info = {**my_identity(), "since": time.time(), "what": self.what, "token": self.token}
        # Not ``*.tmp``: orphan cleanup must not delete a lock that is being taken.
        tmp = self.folder / f".{LOCK_NAME}.{self.token}.ltmp"
        tmp.write_text(json.dumps(info))
        try:
            for _ in range(5):
                try:
                    os.link(tmp, self.path)
                    _fsync_dir(self.folder)
                    self._start_refresh()
                    return self
                except FileExistsError:
                    pass
                self._remove_if_stale()
            holder, _ = self._peek()
            raise LockHeld(self.path, holder or {})
        finally:
            tmp.unlink(missing_ok=True)

    def _peek(self) -> tuple[dict[str, Any] | None, float]:
        try:
            return _read(self.path)
        except FileNotFoundError:
            return None, 0.0

    def _remove_if_stale(self) -> None:
        with _folder_guard(self.folder):
            try:
                holder, age = _read(self.path)
            except FileNotFoundError:
                return
            if holder is not None and holder_alive(holder, age):
                raise LockHeld(self.path, holder)
            self.taken_over = holder or {"what": "unreadable lock file"}
            self.path.unlink(missing_ok=True)

    def _start_refresh(self) -> None:
        def refresh() -> None:
            while not self._stop.wait(REFRESH_SECONDS):
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        self._thread = threading.Thread(target=refresh, name="kaleibench-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Drop the lock if this object still holds it."""
        self._stop.set()
        try:
            with _folder_guard(self.folder):
                holder, _ = self._peek()
                if holder is not None and holder.get("token") == self.token:
                    self.path.unlink(missing_ok=True)
        except OSError as exc:  # the next run will find it stale; do not mask the real outcome
            log.warning("%s: could not release the lock (%s)", self.path, exc)

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _fsync_dir(folder: Path) -> None:
    from kaleibench.utils.io import fsync_dir

    fsync_dir(folder)
