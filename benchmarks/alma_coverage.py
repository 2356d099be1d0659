"""Landmark coverage of ALMA's greedy allocations, against a uniformly random allocation.

For each finished run folder: its saved policy (``final.pt`` by default) plays greedy episodes
on the run's fixed evaluation seeds (as the training loop's evaluation does), and at every
decision point the executed allocation's coverage (share of the landmarks with at least one
agent) is measured, next to that of a uniformly random allocation drawn on the same states.

    python benchmarks/alma_coverage.py RUN_DIR [RUN_DIR ...] [--policy final|best]
        [--episodes 100]

Prints one JSON line per run and the mean over runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from kaleibench.algos.alma.batch import random_allocs, subtask_coverage
from kaleibench.evaluate import load_run
from kaleibench.train.rollout import collect
from kaleibench.utils.seeding import eval_seeds


def greedy_coverage(run_dir: Path, policy: str, episodes: int) -> dict[str, float]:
    """Coverage of the greedy and of a random allocation at every decision point of
    ``episodes`` greedy episodes of a run's saved policy."""
    run, env = load_run(run_dir, policy)
    seeds = eval_seeds(episodes)
    gen = torch.Generator().manual_seed(0)
    greedy, rand, team = [], [], []
    b = env.n_envs
    padded = seeds + [seeds[-1]] * ((-len(seeds)) % b)
    with torch.no_grad():
        for k in range(0, len(padded), b):
            rows = min(b, len(seeds) - k)  # padding rows repeat the last seed: not counted
            batch = collect(env, run.algo, run.t_env, explore=False,
                            seeds=padded[k : k + b]).batch
            decide = (batch["hier_decision"][:rows, :-1].bool()
                      & batch["filled"][:rows].bool())  # (rows, T)
            alloc = batch["alloc"][:rows, :-1][decide]  # (M, N, K)
            tasks = batch["task_mask"][:rows, :-1][decide]  # (M, K)
            greedy.append(subtask_coverage(alloc, tasks) * len(alloc))
            rand.append(subtask_coverage(random_allocs(tasks, alloc.shape[1], gen), tasks)
                        * len(alloc))
            team.append(len(alloc))
    n = sum(team)
    return {"greedy_coverage": float(sum(greedy) / n), "random_coverage": float(sum(rand) / n),
            "decisions": n, "episodes": len(seeds), "t_env": run.t_env}


def main() -> None:
    """Measure every run folder given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--policy", choices=["final", "best"], default="final")
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    results = []
    for run_dir in args.runs:
        row = {"run": str(run_dir), **greedy_coverage(run_dir, args.policy, args.episodes)}
        print(json.dumps(row), flush=True)
        results.append(row)
    for key in ("greedy_coverage", "random_coverage"):
        values = [r[key] for r in results]
        print(f"{key}: mean {statistics.mean(values):.3f} over {len(values)} run(s): "
              + ", ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
