"""Shared fixtures: CPU-only, one torch thread, headless pygame."""

from __future__ import annotations

import os

import pytest

from kaleibench.utils.threads import use_one_thread

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
use_one_thread()


@pytest.fixture
def results_dir(tmp_path):  # type: ignore[no-untyped-def]
    """A fresh results root."""
    return tmp_path / "runs"
