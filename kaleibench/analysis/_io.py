"""Atomic file writes and tolerant JSONL reading for the analysis package.

Every output of the report is written to a temporary file in the destination folder, flushed,
fsync'ed and then moved over the target with :func:`os.replace`, so a reader never sees a
half-written table or figure, and re-running a report overwrites instead of appending.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from kaleibench.utils.io import atomic_write_bytes

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "read_json",
           "read_jsonl"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from ``path``.

    Raises:
        ValueError: If the file does not hold a JSON object (or is not UTF-8 JSON); the
            message names the file.
    """
    try:
        obj = json.loads(Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: corrupt JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read an append-only JSONL file, skipping lines that do not parse.

    A crash can leave a torn last line; it is dropped with a warning and never trusted. A
    corrupt interior line (e.g. a torn line that a resumed run appended after) is dropped with
    a warning naming its line number.

    Args:
        path: The ``metrics.jsonl`` file.

    Returns:
        The parsed rows, in file order.
    """
    rows: list[dict[str, Any]] = []
    lines = Path(path).read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            where = "torn last line" if number == len(lines) else f"corrupt line {number}"
            warnings.warn(f"{path}: ignoring {where}: {line[:80]!r}", stacklevel=2)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
