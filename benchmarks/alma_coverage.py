"""Landmark coverage of ALMA's greedy allocations, against a uniformly random allocation, and
what the allocation critic thinks of coverage.

For each finished run folder: its saved policy (``final.pt`` by default) plays greedy episodes
on the run's fixed evaluation seeds (as the training loop's evaluation does), and at every
decision point the executed allocation's coverage (share of the landmarks with at least one
agent) is measured, next to that of a uniformly random allocation drawn on the same states.
On the same decision states the critic scores every possible allocation (K^N of them): its
mean value per coverage level, the coverage of its best allocation, and the per-state
correlation of value and coverage say whether the critic has learned that covering pays.

    python benchmarks/alma_coverage.py RUN_DIR [RUN_DIR ...] [--policy final|best]
        [--episodes 100]

Prints one JSON line per run and the mean over runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

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
    states: list[dict[str, torch.Tensor]] = []
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
            states.append({key: batch[key][:rows, :-1][decide] for key in
                           ("entities", "entity_mask", "entity2task", "task_mask")})
    n = sum(team)
    return {"greedy_coverage": float(sum(greedy) / n), "random_coverage": float(sum(rand) / n),
            "decisions": n, "episodes": len(seeds), "t_env": run.t_env,
            **critic_probe(run.algo, {k: torch.cat([s[k] for s in states]) for k in states[0]})}


def critic_probe(algo: Any, ent: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The allocation critic on every allocation of the given decision states (M of them)."""
    alma = getattr(algo, "alma", algo)  # ALMA+MINE wraps an ALMA learner
    m, n, k = len(ent["entities"]), alma.n_agents, ent["task_mask"].shape[-1]
    choices = list(itertools.product(range(k), repeat=n))
    allocs = torch.zeros(m, len(choices), n, k)
    for j, choice in enumerate(choices):
        allocs[:, j, torch.arange(n), torch.tensor(choice)] = 1.0
    active = ent["task_mask"][:, None].expand(m, len(choices), k).reshape(-1, k)
    cover = ((allocs.sum(2) > 0).float() * active.view(m, -1, k)).sum(-1) / active.view(
        m, -1, k).float().sum(-1)  # (M, K^N)
    with torch.no_grad():
        q = alma.high.critic(ent["entities"], ent["entity_mask"], ent["entity2task"], allocs,
                             torch.Generator().manual_seed(0))  # (M, K^N)
    best = q.argmax(1)
    qc, cc = q - q.mean(1, keepdim=True), cover - cover.mean(1, keepdim=True)
    corr = (qc * cc).sum(1) / (qc.norm(dim=1) * cc.norm(dim=1)).clamp_min(1e-12)
    levels = sorted({round(float(c), 3) for c in cover.flatten()})
    return {"critic_q_by_coverage": {str(c): float(q[(cover - c).abs() < 1e-3].mean())
                                     for c in levels},
            "critic_best_coverage": float(cover[torch.arange(m), best].mean()),
            "critic_corr_q_coverage": float(corr.mean())}


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
    for key in ("greedy_coverage", "random_coverage", "critic_best_coverage",
                "critic_corr_q_coverage"):
        values = [r[key] for r in results]
        print(f"{key}: mean {statistics.mean(values):.3f} over {len(values)} run(s): "
              + ", ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
