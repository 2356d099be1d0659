"""Freed memory kept in the process: the update stops paying page faults and computes the same."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

UPDATES = r"""
import hashlib, json, resource, sys
from kaleibench.utils.threads import use_one_thread
use_one_thread()
if sys.argv[1] == "keep":
    from kaleibench.utils.memory import keep_freed_memory
    assert keep_freed_memory()
import torch
import kaleibench
from kaleibench.algos import load_variant
from kaleibench.algos.base import EnvInfo
from kaleibench.train.rollout import collect

env = kaleibench.make("mpe/spread-v0", n_envs=8, seed=0)
algo = load_variant("qmix").build(EnvInfo.of(env, 10**6), seed=0)
for _ in range(4):
    algo.buffer.insert(collect(env, algo, 0, True).batch)
for _ in range(10):  # the heap grows to its working size
    algo.update(1000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):  # glibc gives memory back in bursts: count over many updates
    algo.update(1000)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in algo.params)).hexdigest()
print(json.dumps({"faults": faults, "params": digest}))
"""


def _updates(mode: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", UPDATES, mode], check=True, capture_output=True,
                         text=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_kept_memory_removes_the_updates_page_faults_and_changes_no_value() -> None:
    default, kept = _updates("default"), _updates("keep")
    assert kept["params"] == default["params"]  # 50 updates: the same parameters, bit for bit
    assert isinstance(kept["faults"], float) and isinstance(default["faults"], float)
    # measured (AMD EPYC, glibc 2.36, 40 updates): 0.1-12 per update kept. Without, the count
    # depends on the process: 280-490 per update with an older learner; with the current one
    # 0.05-0.7 in most processes (glibc's own dynamic thresholds rise with the update's large
    # freed blocks) but 2,505 in one of four, so only the kept side is asserted.
    assert kept["faults"] < 50, (kept, default)
