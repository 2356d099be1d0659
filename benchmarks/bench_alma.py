"""ALMA training speed, as ratios measured in one run (never timed assertions).

Prints ALMA training env-steps per CPU-second on ``mpe/spread-v0`` (collect + the learner's
updates, n_envs 8, one low-level + one allocation update per episode) for

* the current code with the original mixer settings (``mixer: subtask``, ``hypernet_embed:
  64``): the same algorithm as the old implementation, so old ÷ new is the pure speed-up;
* the current code with its defaults (ALMA's attention mixer);
* the old implementation (commit ``ba1ad16``, exported with ``git archive`` into a temporary
  folder and imported in its own subprocess);
* QMIX in the current code, for the ALMA ÷ QMIX rate.

Each configuration runs in a fresh single-threaded subprocess and is measured in the CPU time of
that process (``time.process_time``), so other load on the machine does not enter the figures.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import RATIO_LINES
from cpu_workers import REPO, export_commit, train_rate

OLD_COMMIT = "ba1ad16"
"""The last commit before the ALMA speed work."""
CPU_SECONDS = float(os.environ.get("KALEIBENCH_BENCH_SECONDS", "25"))
"""CPU seconds of training measured per configuration."""

def _rate(root: Path, variant: str, overrides: dict[str, Any] | None = None) -> float:
    return train_rate(root, variant, seconds=CPU_SECONDS, overrides=overrides)


def test_alma_training_rate_new_vs_old(benchmark: Any) -> None:
    if not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to export the old implementation")
    result: dict[str, float] = {}

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            old_root = export_commit(OLD_COMMIT, Path(tmp))
            result["old"] = _rate(old_root, "alma-alloc")
        result["same"] = _rate(REPO, "alma-alloc", {"mixer": "subtask", "hypernet_embed": 64})
        result["default"] = _rate(REPO, "alma-alloc")
        result["qmix"] = _rate(REPO, "qmix")

    benchmark.pedantic(run, rounds=1, iterations=1)
    r = result
    RATIO_LINES.append(
        f"ALMA training (spread, env-steps per CPU-second): new {r['same']:.0f} / old "
        f"{OLD_COMMIT} {r['old']:.0f} = {r['same'] / r['old']:.2f}x (same algorithm, goal >= 3x)")
    RATIO_LINES.append(
        f"ALMA training with the attention mixer (default): {r['default']:.0f} steps/CPU-s = "
        f"{r['default'] / r['old']:.2f}x old, {r['default'] / r['same']:.2f}x the subtask mixer")
    RATIO_LINES.append(
        f"ALMA / QMIX training rate: {r['same']:.0f} / {r['qmix']:.0f} = "
        f"{r['same'] / r['qmix']:.3f} (subtask mixer); {r['default'] / r['qmix']:.3f} (default)")
