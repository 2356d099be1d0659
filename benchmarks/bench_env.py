"""Env throughput: numpy backend vs the mpe2 reference backend, in the same run.

One round = one full episode in every row: ``reset`` (per-row seeded world draws and opponent
plans included) plus ``episode_limit`` steps with pre-drawn random team actions. Throughput is
env-steps/s = rows × steps / median round time. The mpe2 backend steps its rows one by one, so its
per-row rate does not grow with B; it runs at B = 1 and 64 only (B = 1024 would take minutes per
round), and the B = 1024 ratio divides by mpe2's best measured rate. No timed assertions.

Run: ``pytest benchmarks`` (``tox -e bench``); the ratio table is printed in the terminal summary.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kaleibench.envs import make

TASKS = ("mpe/spread-v0", "mpe/tag-v0")
CASES = [("numpy", 1), ("numpy", 64), ("numpy", 1024), ("mpe2", 1), ("mpe2", 64)]
ROUNDS = {1: 30, 64: 5, 1024: 5}
_RATES: dict[tuple[str, str, int], float] = {}  # (task, backend, B) -> env-steps/s


def _episode_runner(task_id: str, backend: str, n_envs: int) -> tuple[Any, int]:
    task = make(task_id, n_envs=n_envs, seed=0, backend=backend)
    limits = np.array(task.action_sizes)  # type: ignore[attr-defined]
    actions = np.random.default_rng(0).integers(
        0, limits, size=(task.episode_limit, n_envs, task.n_agents)
    )

    def episode() -> None:
        task.reset()
        for a in actions:
            task.step(a)

    return episode, n_envs * task.episode_limit


def ratio_lines(rates: dict[tuple[str, str, int], float]) -> list[str]:
    """Table lines: env-steps/s per (task, backend, B) and numpy ÷ mpe2 (same B, else best)."""
    lines = ["env-steps/s (rows x steps / s, full episodes incl. reset) and numpy / mpe2:"]
    for task_id in sorted({t for t, _, _ in rates}):
        ref = [v for (t, b, _), v in rates.items() if t == task_id and b == "mpe2"]
        best_ref = max(ref) if ref else float("nan")
        for (t, backend, n), rate in sorted(rates.items()):
            if t != task_id:
                continue
            same_b = rates.get((t, "mpe2", n), best_ref)
            ratio = f"  x{rate / same_b:8.1f} vs mpe2" if backend == "numpy" else ""
            lines.append(f"  {t:18s} {backend:6s} B={n:5d} {rate:12.0f}{ratio}")
    return lines


@pytest.mark.parametrize(("backend", "n_envs"), CASES, ids=[f"{b}-B{n}" for b, n in CASES])
@pytest.mark.parametrize("task_id", TASKS)
def test_env_throughput(
    benchmark: Any, request: pytest.FixtureRequest, task_id: str, backend: str, n_envs: int
) -> None:
    """One full episode of ``n_envs`` rows on ``backend``; records env-steps/s."""
    request.config.kaleibench_ratio_lines = lambda: ratio_lines(_RATES)  # type: ignore[attr-defined]
    episode, steps = _episode_runner(task_id, backend, n_envs)
    benchmark.group = f"env {task_id}"
    benchmark.extra_info["env_steps_per_round"] = steps
    benchmark.pedantic(episode, rounds=ROUNDS[n_envs], iterations=1, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        rate = steps / stats.stats.median
        benchmark.extra_info["env_steps_per_s"] = rate
        _RATES[(task_id, backend, n_envs)] = rate
