"""Measure the cost table behind ETAs and suite estimates: env steps per CPU-second of training.

For every learning variant on every task it can run (ALMA needs tasks with subtasks), a fresh
single-threaded subprocess trains with the training loop's work (collect a batch of ``n_envs``
episodes, then the learner's updates) for a fixed amount of CPU time after a warm-up that fills
the replay buffer, and reports env steps ÷ ``time.process_time()``. CPU time, not wall time, so
other load on the machine hardly enters the figures; evaluation episodes are not included (they
are greedy rollouts without updates, a few per cent of a cell).

Usage (from the repository root; writes the table that ``kaleibench list``, ``status`` and the
progress bar use)::

    python benchmarks/measure_costs.py --out kaleibench/harness/cost_priors.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from cpu_workers import REPO, train_rate


def cpu_name() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from kaleibench.algos import load_variant, variants
    from kaleibench.envs import tasks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="CPU seconds measured per QMIX-family cell (ALMA: 3x)")
    parser.add_argument("--variants", nargs="*", help="only these variants (default: all)")
    parser.add_argument("--tasks", nargs="*", help="only these tasks (default: all)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other entries of an existing --out table")
    args = parser.parse_args(argv)
    names = args.variants or [v for v in variants.names() if load_variant(v).learns]
    rates: dict[str, dict[str, float]] = {}
    if args.update and args.out.exists():
        rates = json.loads(args.out.read_text())["rates"]
    for name in names:
        variant = load_variant(name)
        seconds = args.seconds * (3 if variant.needs_subtasks else 1)
        for task in args.tasks or tasks.names():
            if variant.needs_subtasks and not tasks.get(task).has_subtasks:
                continue
            rate = train_rate(REPO, name, task, seconds)
            rates.setdefault(name, {})[task] = round(rate, 1)
            print(f"{name:<12} {task:<26} {rate:8.1f} env steps/CPU-s", flush=True)
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    table = {"method": "env steps per CPU-second of one single-threaded training process "
                       "(collect 8 episodes + the learner's updates), after a 4-batch warm-up, "
                       f"{args.seconds:g} CPU-s per QMIX-family cell, 3x that for ALMA",
             "cpu": cpu_name(), "commit": sha, "date": time.strftime("%Y-%m-%d"),
             "rates": rates}
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
