"""Where the shipped ``baselines/`` and ``suites/`` folders are, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """``baselines`` or ``suites``: packaged copy (wheel) first, else the checkout's folder."""
    packaged = _PKG / "_data" / name
    if packaged.is_dir():
        return packaged
    return _PKG.parent / name
