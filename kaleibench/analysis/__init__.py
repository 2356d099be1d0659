"""Statistics, reports and regression checks for kaleibench results folders.

Public entry points (imported lazily, so ``import kaleibench.analysis`` stays cheap):

- :func:`write_report` - ``report.md`` with tables (MD/LaTeX/CSV) and figures (PNG/PDF).
- :func:`export_marl_eval` - marl-eval raw JSON.
- :func:`build_reference`, :func:`save_reference`, :func:`load_reference`,
  :func:`check_against_reference`, :func:`format_regressions` - the CI regression gate.
- :func:`load_results`, :func:`check_completeness`, :func:`score_matrices` - score data.
- :func:`aggregate_intervals`, :func:`poi_interval`, :func:`performance_profiles` - statistics.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "write_report": "report",
    "analyse": "report",
    "export_marl_eval": "export",
    "build_reference": "regression",
    "save_reference": "regression",
    "load_reference": "regression",
    "check_against_reference": "regression",
    "format_regressions": "regression",
    "Regression": "regression",
    "load_results": "scores",
    "check_completeness": "scores",
    "require_complete": "scores",
    "score_matrices": "scores",
    "IncompleteResultsError": "scores",
    "aggregate_intervals": "stats",
    "poi_interval": "stats",
    "performance_profiles": "stats",
    "Interval": "stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"kaleibench.analysis.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'kaleibench.analysis' has no attribute {name!r}")
