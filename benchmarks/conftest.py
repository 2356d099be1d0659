"""Collect ``bench_*.py`` modules: ``pytest benchmarks`` runs them with pytest-benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Treat ``benchmarks/bench_*.py`` as test modules (pytest's default pattern is test_*.py)."""
    explicit = any(Path(a).resolve() == file_path.resolve() for a in parent.config.args)
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not explicit:
        return pytest.Module.from_parent(parent, path=file_path)
    return None


RATIO_LINES: list[str] = []
"""Ratio lines appended by the bench modules, printed in the terminal summary."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the env throughput table of ``bench_env.py`` and the other modules' ratios."""
    lines = getattr(terminalreporter.config, "kaleibench_ratio_lines", None)
    if lines is not None:
        terminalreporter.write_sep("-", "kaleibench env throughput")
        for line in lines():
            terminalreporter.write_line(line)
    if RATIO_LINES:
        terminalreporter.write_sep("-", "kaleibench ratios")
        for line in RATIO_LINES:
            terminalreporter.write_line(line)
