"""Shared pieces of the CPU-time benchmarks: single-threaded subprocesses, old commits.

Speed is compared as ratios measured in one run, each figure in the CPU time of its own fresh
single-threaded process (so other load on the machine hardly enters it). An older
implementation is exported with ``git archive`` and imported from its folder via PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

TRAIN_RATE_WORKER = r"""
import json, sys, time
from dataclasses import replace
args = json.loads(sys.argv[1])
from kaleibench.utils.threads import use_one_thread
use_one_thread()
import kaleibench
from kaleibench.algos import load_variant
from kaleibench.algos.base import EnvInfo
from kaleibench.train.rollout import collect
env = kaleibench.make(args["task"], n_envs=8, seed=0)
variant = load_variant(args["variant"])
config = replace(variant.config, **args["overrides"])
algo = variant.algo_class(config, EnvInfo.of(env, 2_050_000), 0)
for _ in range(4):  # warm buffer: every later episode triggers its updates
    algo.train_on(collect(env, algo, 100_000, True).batch, 100_000)
steps, start = 0, time.process_time()
while time.process_time() - start < args["seconds"]:
    ro = collect(env, algo, 100_000, explore=True)
    algo.train_on(ro.batch, 100_000)
    steps += ro.steps
print(json.dumps({"rate": steps / (time.process_time() - start)}))
"""
"""Training env-steps per CPU-second of one variant on one task: collect 8 episodes, then the
learner's updates (the training loop's work), after a 4-batch warm-up that fills the buffer."""


def single_thread_env(root: Path) -> dict[str, str]:
    """The environment of a worker that imports kaleibench from ``root`` on one thread."""
    return {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}


def export_commit(commit: str, dest: Path) -> Path:
    """``kaleibench`` and ``baselines`` of ``commit``, unpacked under ``dest / "old"``."""
    archive = dest / "old.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), commit,
                    "kaleibench", "baselines"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "old", filter="data")
    return dest / "old"


def train_rate(root: Path, variant: str, task: str = "mpe/spread-v0", seconds: float = 10.0,
               overrides: dict[str, Any] | None = None) -> float:
    """Env steps per CPU-second of ``variant`` training on ``task`` with the code in ``root``
    (a fresh single-threaded process, :data:`TRAIN_RATE_WORKER`)."""
    args = json.dumps({"variant": variant, "task": task, "overrides": overrides or {},
                       "seconds": seconds})
    out = subprocess.run([sys.executable, "-c", TRAIN_RATE_WORKER, args],
                         env=single_thread_env(root), cwd=root, check=True,
                         capture_output=True, text=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rate"])
