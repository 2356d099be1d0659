"""Learner speed, measured as ratios inside one run (never timed assertions).

* one learner update: kalei-qmix vs its matched qmix-1r3 (goal: ≤ 1.5×);
* QMIX training env-steps/s on ``mpe/spread-v0`` (collect + one update per episode, the
  training loop's work) vs raw single-env mpe2 random stepping, with the time split
  env / act / learn / other.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from conftest import RATIO_LINES

import kaleibench
from kaleibench.algos import load_variant
from kaleibench.algos.base import EnvInfo
from kaleibench.train.rollout import collect
from kaleibench.utils.threads import use_one_thread

_UPDATE: dict[str, float] = {}


def _learner(name: str, n_envs: int = 8) -> tuple[Any, Any]:
    use_one_thread()
    env = kaleibench.make("mpe/spread-v0", n_envs=n_envs, seed=0)
    algo = load_variant(name).build(EnvInfo.of(env, 10**6), seed=0)
    return algo, env


@pytest.mark.parametrize("name", ["qmix-1r3", "kalei-qmix", "qmix"])
def test_learner_update(benchmark: Any, name: str) -> None:
    algo, env = _learner(name)
    for _ in range(4):
        algo.buffer.insert(collect(env, algo, 0, True).batch)
    benchmark.pedantic(algo.update, args=(1000,), rounds=30, warmup_rounds=3)
    _UPDATE[name] = benchmark.stats.stats.median
    if name in ("qmix-1r3", "kalei-qmix") and {"qmix-1r3", "kalei-qmix"} <= set(_UPDATE):
        ratio = _UPDATE["kalei-qmix"] / _UPDATE["qmix-1r3"]
        RATIO_LINES.append(f"learner update: kalei-qmix {_UPDATE['kalei-qmix'] * 1e3:.1f} ms / "
                           f"qmix-1r3 {_UPDATE['qmix-1r3'] * 1e3:.1f} ms = {ratio:.2f}x "
                           "(goal <= 1.5x)")


def _raw_mpe2_steps_per_second(seconds: float = 3.0) -> float:
    module = importlib.import_module("mpe2.simple_spread_v3")
    env = module.parallel_env(N=3, local_ratio=0.5, max_cycles=25)
    rng = np.random.default_rng(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.reset(seed=int(rng.integers(2**31)))
        for _ in range(25):
            env.step({a: int(rng.integers(5)) for a in env.possible_agents})
        steps += 25
    return steps / (time.perf_counter() - start)


def _timed_training(algo: Any, env: Any, seconds: float) -> tuple[float, dict[str, float]]:
    """Env-steps/s of the loop's work, and the share of time in env / act / learn / other."""
    split = {"env": 0.0, "act": 0.0}
    step, act = env.step, algo.act

    def timed_step(a: Any) -> Any:
        t = time.perf_counter()
        out = step(a)
        split["env"] += time.perf_counter() - t
        return out

    def timed_act(*args: Any) -> Any:
        t = time.perf_counter()
        out = act(*args)
        split["act"] += time.perf_counter() - t
        return out

    env.step, algo.act = timed_step, timed_act
    steps, learn, start = 0, 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        ro = collect(env, algo, 10**5, explore=True)
        t = time.perf_counter()
        algo.train_on(ro.batch, 10**5)
        learn += time.perf_counter() - t
        steps += ro.steps
    total = time.perf_counter() - start
    split["learn"] = learn
    split["other"] = total - sum(split.values())
    return steps / total, {k: v / total for k, v in split.items()}


def test_qmix_training_vs_raw_mpe2(benchmark: Any) -> None:
    algo, env = _learner("qmix")
    algo = replace(load_variant("qmix")).build(EnvInfo.of(env, 10**6), 0)
    for _ in range(4):  # warm buffer: every later episode triggers one update
        algo.buffer.insert(collect(env, algo, 0, True).batch)
    raw = _raw_mpe2_steps_per_second()
    result: dict[str, Any] = {}

    def run() -> None:
        result["rate"], result["split"] = _timed_training(algo, env, seconds=8.0)

    benchmark.pedantic(run, rounds=1, iterations=1)
    split = ", ".join(f"{k} {v:.0%}" for k, v in result["split"].items())
    RATIO_LINES.append(
        f"QMIX training {result['rate']:.0f} env-steps/s / raw mpe2 stepping {raw:.0f} steps/s "
        f"= {result['rate'] / raw:.2f} (goal >= 1.5); split: {split}")
