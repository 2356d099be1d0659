"""Crash-safe file writes: a reader never sees a half-written file.

Every whole-file write goes to a temporary file in the same folder, is fsync'ed, then renamed
over the target with ``os.replace`` (atomic on POSIX), and the folder is fsync'ed so the rename
itself survives a power loss. Append-only JSONL rows are written whole with one ``write`` +
fsync; readers drop a torn or undecodable line. A process killed mid-write leaves its
``.<name>.*.tmp`` behind; :func:`remove_orphan_temps` clears those on the next run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_MODE = 0o644
"""Results are shared artefacts: readable by all (mkstemp alone would leave 0600)."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + os.replace)."""

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(data)

    atomic_save(path, write)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as pretty JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save(path: str | Path, writer: Callable[[str], None]) -> None:
    """Atomically produce ``path`` with ``writer(tmp_path)`` (e.g. ``torch.save``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder, so a rename or a new file in it is durable (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


ORPHAN_LOCK_SECONDS = 600.0
"""A lock's temp file (``*.ltmp``) lives for milliseconds; one this old was left by a kill."""


def remove_orphan_temps(folder: str | Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files that killed atomic writes left in ``folder`` (and
    lock temp files ``*.ltmp`` older than ``ORPHAN_LOCK_SECONDS``).

    Only call this while holding the folder's lock: a live writer's temp file looks the same.
    """
    removed = []
    now = time.time()
    old_lock_temps = [p for p in Path(folder).glob(".*.ltmp")
                      if _age(p, now) > ORPHAN_LOCK_SECONDS]
    for tmp in [*Path(folder).glob(".*.tmp"), *old_lock_temps]:
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError as exc:
            log.warning("%s: could not remove orphan temp file (%s)", tmp, exc)
    return removed


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0


def read_json(path: str | Path) -> Any:
    """Read a JSON file; raise ``ValueError`` naming the file if it is corrupt."""
    try:
        return json.loads(Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: corrupt JSON ({exc})") from exc


def read_json_object(path: str | Path) -> dict[str, Any]:
    """Read a file that must hold a JSON object; ``ValueError`` naming the file otherwise."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def append_jsonl(path: str | Path, row: dict[str, Any]) -> int:
    """Append one JSON row (one write + fsync); return the file size after the write."""
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    with open(path, "ab") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
        return fh.tell()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read JSONL rows; a torn or corrupt line is skipped with a warning, never trusted."""
    rows: list[dict[str, Any]] = []
    path = Path(path)
    if not path.exists():
        return rows
    for k, line in enumerate(path.read_bytes().split(b"\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s:%d: skipping a torn/corrupt line", path, k + 1)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_file(path: str | Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (used to drop rows written after a checkpoint).

    Raises:
        ValueError: If the file is shorter than ``size`` (truncate would pad it with NULs).
    """
    actual = os.path.getsize(path)
    if actual < size:
        raise ValueError(f"{path}: {actual} bytes, shorter than the expected {size}")
    with open(path, "r+b") as fh:
        fh.truncate(size)
        fh.flush()
        os.fsync(fh.fileno())
