"""Collect ``bench_*.py`` modules: ``pytest benchmarks`` runs them with pytest-benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Treat ``benchmarks/bench_*.py`` as test modules (pytest's default pattern is test_*.py)."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the env throughput ratio table that ``bench_env.py`` collected, if it ran."""
    lines = getattr(terminalreporter.config, "kaleibench_ratio_lines", None)
    if lines is not None:
        terminalreporter.write_sep("-", "kaleibench env throughput")
        for line in lines():
            terminalreporter.write_line(line)
