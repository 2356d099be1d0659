"""QMIX learner speed in CPU time, as ratios measured in one run (never timed assertions).

Prints, for ``mpe/spread-v0`` (n_envs 8, batch 32, one update per collected episode):

* QMIX training env-steps per CPU-second (collect + update, the training loop's work, with a
  warm buffer: steady state; the buffer grows from 32 episodes as in a run's first ~75k steps,
  and the share of sampled episodes whose target values were read from the cache is printed)
  for the current code, for the current code with its C kernels switched off
  (``KALEIBENCH_NATIVE=0``: the torch paths) and for the code before the learner speed work
  (commit ``b1385bd``, exported with ``git archive`` into a temporary folder), and each ÷ raw
  mpe2 single-env stepping (random actions, one ``parallel_env``);
* one QMIX update in CPU-ms, old and new, with its target pass computed (the cache of target
  values is cleared before each one), and ÷ the update's FLOP floor: the update's
  matrix-product FLOPs (forward = 2·rows·in·out per layer, backward twice that, target pass
  forward only; element-wise work not counted) divided by the fastest of the rates one core
  reaches on the update's main product, (B·(T+1)·N, 64) × (64, 192), through ``torch.mm``
  (MKL), through oneDNN and through the C tiles of ``fma_gemm.h`` (:mod:`kaleibench.nn.products`).
  The new code's worker measures that rate right after every round of updates, so that each
  round's update and floor are timed at the same moment (the machine's speed drifts by 10-15 %
  within a run; a floor measured once, minutes away, moved the ratio by as much); the median of
  the rounds' ratios is reported. The three rates are also measured once in a separate process
  and printed, with the update against ``torch.mm``'s rate; and
  the update with every target value read from the cache, against the floor without the
  target pass (measured the same way);
* Kalei-QMIX ÷ qmix-1r3 update time (goal ≤ 1.5×), old and new;
* the same figures for the current code with glibc's default ``malloc`` thresholds (without
  :func:`kaleibench.utils.memory.keep_freed_memory`, which every training run calls), and
  where the current update's time goes under torch's profiler: torch's and oneDNN's matrix
  products, and all of torch's operators (the rest is kaleibench's C kernels, which the
  profiler does not see, and Python).

Every figure is taken in the CPU time (``time.process_time``) of a single-threaded subprocess.
The versions run as persistent workers asked in turn (old, new, no-C, old, new, ...), so that
load from other processes on the machine hits them alike; medians over the turns are reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import RATIO_LINES
from cpu_workers import REPO, export_commit, single_thread_env

OLD_COMMIT = "b1385bd"
"""The last commit before the QMIX learner speed work."""
CPU_SECONDS = float(os.environ.get("KALEIBENCH_BENCH_SECONDS", "15"))
"""CPU seconds of training measured per training-rate sample."""
ROUNDS = int(os.environ.get("KALEIBENCH_BENCH_ROUNDS", "2"))
"""Alternating old/new repeats; medians are reported."""

RATE = r"""
def rate(product, rows, reps, calls):  # FLOP/s of the main product: median of reps x calls
    import time
    product()
    rates = []
    for _ in range(reps):
        start = time.process_time()
        for _ in range(calls):
            product()
        rates.append(2 * rows * 64 * 192 * calls / (time.process_time() - start))
    return sorted(rates)[reps // 2]
"""
"""The rate measurement shared by :data:`WORKER` and :data:`PROBE`."""

WORKER = RATE + r"""
import json, sys, time
from kaleibench.utils.threads import use_one_thread
use_one_thread()
import os
try:  # as a training run sets its process up (the old commit has no such step)
    from kaleibench.utils.memory import keep_freed_memory
    if os.environ.get("BENCH_KEEP_MEMORY") != "0":
        keep_freed_memory()
except ImportError:
    pass
import numpy as np
import torch
import kaleibench
from kaleibench.algos import load_variant
from kaleibench.algos.base import EnvInfo
from kaleibench.train.rollout import collect

env = kaleibench.make("mpe/spread-v0", n_envs=8, seed=0)
env.entity_view = False  # as a training run of the QMIX family sets it (no-op where unknown)
algo = load_variant(sys.argv[1]).build(EnvInfo.of(env, 10**6), seed=0)
for _ in range(4):  # warm buffer: every later episode triggers one update per row
    algo.buffer.insert(collect(env, algo, 0, True).batch)
for _ in range(5):
    algo.update(1000)
print("ready", flush=True)
MATMULS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "mkldnn::_linear_pointwise")
TORCH_OPS = ("aten::", "mkldnn::")
ROWS = 32 * 26 * 3  # the update's main product: (B·(T+1)·N, 64) x (64, 192)
main_a, main_w = torch.randn(ROWS, 64), torch.randn(64, 192)
products = [lambda: main_a @ main_w]  # torch.mm; then oneDNN's and the C tiles' where present
try:
    from kaleibench.nn.products import onednn
    main_wt = main_w.t().contiguous()
    if onednn():
        products.append(lambda: torch.ops.mkldnn._linear_pointwise(main_a, main_wt, None, "none",
                                                                   [], ""))
except ImportError:  # older code
    pass
try:
    from kaleibench.nn.products import _kernels, matmul
    if _kernels() is not None:
        products.append(lambda: matmul(main_a, main_w))
except ImportError:
    pass


def floor_rate():  # FLOP/s of the main product, the fastest path (median of 5 x 20 calls)
    return max(rate(product, ROWS, 5, 20) for product in products)


cache = getattr(algo, "target_cache", None)  # reused target Q-values (absent in old code)
hits: list[float] = []


def update(reuse):
    if cache is not None and not reuse:
        cache.clear()  # the whole update's work: its target pass included
    algo.update(1000)


for line in sys.stdin:  # "update K": CPU-ms per update (target pass computed), "cached K": the
    cmd, arg = line.split()  # same with every target pass reused; "train S": env-steps per
    start = time.process_time()  # CPU-second; "hits 0": mean reuse rate in "train" so far;
    if cmd in ("profile", "torchops"):  # "profile K": CPU-ms per update spent in torch's and
        from torch.profiler import profile  # oneDNN's matrix products; "torchops K": in all of
        with profile() as prof:  # torch's operators (the profiler does not see the C kernels)
            for _ in range(int(arg)):
                update(False)
        spent = sum(e.self_cpu_time_total for e in prof.key_averages()
                    if (e.key in MATMULS if cmd == "profile" else e.key.startswith(TORCH_OPS)))
        out = spent / 1e3 / int(arg)
    elif cmd in ("update", "cached"):
        for _ in range(int(arg)):
            update(cmd == "cached")
        out = (time.process_time() - start) / int(arg) * 1e3
    elif cmd == "floor":
        out = floor_rate()
    elif cmd == "hits":
        out = sum(hits) / len(hits) if hits else -1.0
    else:
        steps = 0
        while time.process_time() - start < float(arg):
            ro = collect(env, algo, 100_000, explore=True)
            stats = algo.train_on(ro.batch, 100_000)
            steps += ro.steps
            if "target_cache_hit_rate" in stats:
                hits.append(stats["target_cache_hit_rate"])
        out = steps / (time.process_time() - start)
    print(json.dumps(out), flush=True)
"""

PROBE = RATE + r"""
import json, sys, time, importlib
from kaleibench.utils.threads import use_one_thread
use_one_thread()
import numpy as np
import torch
seconds = float(sys.argv[1])
rows = 32 * 26 * 3  # the update's main product: (B·(T+1)·N, 64) x (64, 192)
a, w = torch.randn(rows, 64), torch.randn(64, 192)
mm_rate = rate(lambda: a @ w, rows, 7, 50)
try:  # the learner's products go through oneDNN where it runs (kaleibench.nn.products)
    from kaleibench.nn.products import linear, onednn
    w_t = w.t().contiguous()
    onednn_rate = rate(lambda: linear(a, w_t), rows, 7, 50) if onednn() else 0.0
except ImportError:  # older code
    onednn_rate = 0.0
try:  # and through the C tiles of fma_gemm.h (kaleibench.nn.products.matmul)
    from kaleibench.nn.products import _kernels, matmul
    c_rate = rate(lambda: matmul(a, w), rows, 7, 50) if _kernels() is not None else 0.0
except ImportError:
    c_rate = 0.0
env = importlib.import_module("mpe2.simple_spread_v3").parallel_env(
    N=3, local_ratio=0.5, max_cycles=25)
rng = np.random.default_rng(0)
steps, start = 0, time.process_time()
while time.process_time() - start < seconds:
    env.reset(seed=int(rng.integers(2**31)))
    for _ in range(25):
        env.step({a: int(rng.integers(5)) for a in env.possible_agents})
    steps += 25
raw = steps / (time.process_time() - start)
print(json.dumps({"flops": max(mm_rate, onednn_rate, c_rate), "mm": mm_rate,
                  "onednn": onednn_rate, "c": c_rate, "raw": raw}))
"""


def update_flops(b: int = 32, t: int = 25, n: int = 3, obs: int = 18, state: int = 54,
                 a: int = 5, h: int = 64, embed: int = 32, hyper: int = 64,
                 target_pass: bool = True) -> float:
    """Matrix-product FLOPs of one QMIX update on spread (agent id in the input).

    Per forward: agent over B·(T+1)·N rows (fc1, GRU input and recurrent products, fc2), mixer
    over B·T rows (first layers of the four hypernetworks, then W1, Wf and V's second layers).
    The online pass costs forward + backward (3× forward), the target pass forward only: 4×
    (3× when the target pass is reused, ``target_pass=False``: the target agent's Q-values and
    the target mixer's hypernetwork outputs; what remains of it, the mixing, is element-wise).
    """
    rows = b * (t + 1) * n
    agent = 2 * rows * ((obs + n) * h + h * 3 * h + h * 3 * h + h * a)
    mixer = 2 * b * t * (state * (hyper + hyper + embed + embed)
                         + hyper * embed * n + hyper * embed + embed)
    return (4.0 if target_pass else 3.0) * (agent + mixer)


def _probe(seconds: float) -> dict[str, float]:
    """GFLOP/s of the main product and raw mpe2 steps, both per CPU-second."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(seconds)],
                         env=single_thread_env(REPO), cwd=REPO, check=True, capture_output=True,
                         text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


Root = tuple[Path, dict[str, str]]
"""Where a worker imports kaleibench from, and extra environment variables."""


def _alternate(roots: dict[str, Root], variant: str, command: str, rounds: int,
               then: str | None = None, floor: bool = False) -> dict[str, float]:
    """Median of ``command`` answers from one persistent worker per root, asked in turn (the
    order rotated every round: which worker ran just before another, and so whose data the
    caches hold, is then the same for all); with ``then``, also each worker's answer to it
    afterwards (key ``"<tag> then"``). With ``floor``
    (``command`` = "update K" or "cached K"), the "new" worker also measures the main product's
    rate after every round, and each answer is divided by the floor of that round (key
    ``"<tag> ÷ floor"``: the median of the per-round ratios) so that update and floor are taken
    at the same moment, whatever the machine's load does meanwhile; key ``"floor rate"`` is the
    median rate."""
    workers = {tag: subprocess.Popen([sys.executable, "-c", WORKER, variant],
                                     env={**single_thread_env(root), **extra}, cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for tag, (root, extra) in roots.items()}
    answers: dict[str, list[float]] = {tag: [] for tag in workers}
    try:
        for w in workers.values():
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        rates: list[float] = []
        order = list(workers)
        for k in range(rounds):  # each round starts with the next worker: no fixed neighbours
            for tag in order[k % len(order):] + order[:k % len(order)]:
                answers[tag].append(_ask(workers[tag], command))
            if floor:
                rates.append(_ask(workers["new"], "floor 0"))
        for tag, w in workers.items():
            if then is not None:
                answers[f"{tag} then"] = [_ask(w, then)]
    finally:
        for w in workers.values():
            if w.stdin is not None:
                w.stdin.close()
            w.wait()
    out = {tag: statistics.median(v) for tag, v in answers.items()}
    if floor:
        flops = update_flops(target_pass=command.startswith("update"))
        for tag in workers:
            out[f"{tag} ÷ floor"] = statistics.median(
                ms / (flops / rate * 1e3) for ms, rate in zip(answers[tag], rates, strict=True))
        out["floor rate"] = statistics.median(rates)
    return out


def _ask(worker: subprocess.Popen[str], command: str) -> float:
    """A worker's answer to one command."""
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(command + "\n")
    worker.stdin.flush()
    return float(json.loads(worker.stdout.readline()))


def test_qmix_speed_new_vs_old(benchmark: Any) -> None:
    if not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to export the old implementation")
    m: dict[str, float] = {}

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            roots = {"old": (export_commit(OLD_COMMIT, Path(tmp)), {}), "new": (REPO, {}),
                     "no-C": (REPO, {"KALEIBENCH_NATIVE": "0"}),
                     "malloc": (REPO, {"BENCH_KEEP_MEMORY": "0"})}
            probe = _probe(CPU_SECONDS / 3)
            m["floor"], m["raw"] = probe["flops"], probe["raw"]
            m["mm rate"], m["onednn rate"], m["c rate"] = probe["mm"], probe["onednn"], probe["c"]
            for variant in ("qmix", "qmix-1r3", "kalei-qmix"):
                for tag, value in _alternate(roots, variant, "update 10", 6 * ROUNDS,
                                             floor=variant == "qmix").items():
                    m[f"{tag} {variant}"] = value
            cached = _alternate({"new": roots["new"]}, "qmix", "cached 10", 6 * ROUNDS,
                                floor=True)
            m["new cached"], m["cached ÷ floor"] = cached["new"], cached["new ÷ floor"]
            m["cached floor rate"] = cached["floor rate"]
            rates = _alternate(roots, "qmix", f"train {CPU_SECONDS / 3}", 3 * ROUNDS, "hits 0")
            m["hits"] = rates["new then"]
            m["matmul ms"] = _alternate({"new": roots["new"]}, "qmix", "profile 10", 3)["new"]
            m["torch ms"] = _alternate({"new": roots["new"]}, "qmix", "torchops 10", 3)["new"]
            for tag in roots:
                m[f"{tag} train"] = rates[tag]
            m["floor rate"] = m.pop("floor rate qmix")
            for tag in ("new", "old", "no-C", "malloc"):
                m[f"{tag} ÷ floor"] = m.pop(f"{tag} ÷ floor qmix")

    benchmark.pedantic(run, rounds=1, iterations=1)
    floor_ms = update_flops() / m["floor"] * 1e3
    RATIO_LINES.append(
        f"QMIX training (spread, env-steps per CPU-second, steady state): new {m['new train']:.0f}"
        f" / old {OLD_COMMIT} {m['old train']:.0f} = {m['new train'] / m['old train']:.2f}x "
        f"(goal >= 2x); ÷ raw mpe2 stepping {m['raw']:.0f}/CPU-s: new "
        f"{m['new train'] / m['raw']:.2f}, old {m['old train'] / m['raw']:.2f}")
    mm_floor_ms = update_flops() / m["mm rate"] * 1e3
    RATIO_LINES.append(
        f"QMIX update: new {m['new qmix']:.2f} ms / old {m['old qmix']:.2f} ms = "
        f"{m['new qmix'] / m['old qmix']:.2f}x; FLOP floor {update_flops() / 1e9:.2f} GFLOP at "
        f"the main product's fastest rate, measured in the new worker after every round "
        f"(median {m['floor rate'] / 1e9:.0f} GFLOP/s = "
        f"{update_flops() / m['floor rate'] * 1e3:.2f} ms): new {m['new ÷ floor']:.2f}x, old "
        f"{m['old ÷ floor']:.2f}x the floor (goal <= 2x; medians of the rounds' ratios)")
    RATIO_LINES.append(
        f"the main product in a separate process before the rounds: {m['mm rate'] / 1e9:.0f} "
        f"GFLOP/s through torch.mm (MKL), {m['onednn rate'] / 1e9:.0f} through oneDNN, "
        f"{m['c rate'] / 1e9:.0f} through the C tiles (0: not available); at the fastest "
        f"({floor_ms:.2f} ms) new {m['new qmix'] / floor_ms:.2f}x, old "
        f"{m['old qmix'] / floor_ms:.2f}x; at torch.mm's ({mm_floor_ms:.2f} ms) new "
        f"{m['new qmix'] / mm_floor_ms:.2f}x, old {m['old qmix'] / mm_floor_ms:.2f}x")
    reused_ms = update_flops(target_pass=False) / m["cached floor rate"] * 1e3
    RATIO_LINES.append(
        f"target values computed ahead (new episodes as stored, the whole buffer after each "
        f"target sync): the training above read {m['hits']:.0%} of its sampled episodes' "
        f"target values from the cache; an update with all of them read "
        f"{m['new cached']:.2f} ms = {m['cached ÷ floor']:.2f}x its own floor "
        f"({reused_ms:.2f} ms, measured the same way), with none {m['new qmix']:.2f} ms")
    RATIO_LINES.append(
        f"where the new update's time goes (torch profiler, 10 updates, self times, which the "
        f"profiler inflates): torch's and oneDNN's matrix products {m['matmul ms']:.2f} ms; all "
        f"of torch's operators {m['torch ms']:.2f} ms; of the unprofiled {m['new qmix']:.2f} ms "
        f"that leaves {m['new qmix'] - m['torch ms']:.2f} ms for kaleibench's C kernels (all "
        f"products, the GRU's gates, the mixing) and Python")
    RATIO_LINES.append(
        f"the C kernels (KALEIBENCH_NATIVE=0 forces the torch paths): training new "
        f"{m['new train']:.0f} / no-C {m['no-C train']:.0f} = "
        f"{m['new train'] / m['no-C train']:.2f}x; update {m['new qmix']:.2f} / "
        f"{m['no-C qmix']:.2f} ms = {m['new qmix'] / m['no-C qmix']:.2f}x; no-C update "
        f"{m['no-C qmix'] / floor_ms:.2f}x the floor")
    RATIO_LINES.append(
        f"freed memory kept in the process (no page faults on the work tensors): training new "
        f"{m['new train']:.0f} / glibc default {m['malloc train']:.0f} = "
        f"{m['new train'] / m['malloc train']:.2f}x; update {m['new qmix']:.2f} / "
        f"{m['malloc qmix']:.2f} ms = {m['new qmix'] / m['malloc qmix']:.2f}x")
    for tag in ("new", "no-C", "malloc", "old"):
        RATIO_LINES.append(
            f"{tag}: kalei-qmix update {m[f'{tag} kalei-qmix']:.2f} ms / qmix-1r3 "
            f"{m[f'{tag} qmix-1r3']:.2f} ms = "
            f"{m[f'{tag} kalei-qmix'] / m[f'{tag} qmix-1r3']:.2f}x (goal <= 1.5x)")
