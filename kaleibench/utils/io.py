"""Crash-safe file writes: a reader never sees a half-written file.

Every whole-file write goes to a temporary file in the same folder, is fsync'ed, then renamed
over the target with ``os.replace`` (atomic on POSIX). Append-only JSONL rows are written whole
with one ``write`` + fsync; readers drop a torn last line.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str | Path) -> Any:
    """Read a JSON file; raise ``ValueError`` naming the file if it is corrupt."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt JSON ({exc})") from exc


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
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a torn/corrupt line", path, k + 1)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_file(path: str | Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (used to drop rows written after a checkpoint)."""
    with open(path, "r+b") as fh:
        fh.truncate(size)
        fh.flush()
        os.fsync(fh.fileno())
