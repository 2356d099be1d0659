"""Atomic writes: all or nothing, readable results, torn JSONL lines dropped."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kaleibench.utils import io


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    io.atomic_write_json(target, {"x": 1})
    io.atomic_write_json(target, {"x": 2})
    assert io.read_json(target) == {"x": 2}
    assert stat.S_IMODE(target.stat().st_mode) == io.FILE_MODE
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    io.atomic_write_bytes(target, b"old")

    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.atomic_save(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_torn_jsonl_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    io.append_jsonl(path, {"t": 1})
    size = io.append_jsonl(path, {"t": 2})
    with open(path, "ab") as fh:
        fh.write(b'{"t": 3')
    assert io.read_jsonl(path) == [{"t": 1}, {"t": 2}]
    io.truncate_file(path, size)
    assert path.stat().st_size == size
