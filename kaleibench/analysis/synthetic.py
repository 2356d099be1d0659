"""A synthetic results folder in the harness layout, for tests, demos and CLI smoke checks.

The folder follows the results contract exactly (``suite.json``, per-run ``spec.json``,
``status.json``, ``metrics.jsonl`` and ``final.json``), with made-up learning curves: variant
``i`` approaches ``skill[i]`` of the task's reference return. Nothing here trains anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kaleibench.analysis._io import atomic_write_json, atomic_write_text
from kaleibench.analysis.scores import task_slug

DEFAULT_TASKS: dict[str, tuple[float, float]] = {
    "mpe/spread-v0": (-200.0, -100.0),
    "mpe/tag-v0": (0.0, 50.0),
}
"""Task id -> (random, reference) bounds used by default."""


def _suite_json(
    name: str,
    tasks: dict[str, tuple[float, float]],
    variants: Sequence[str],
    seeds: Sequence[int],
    t_max: int,
    eval_interval: int,
) -> dict[str, Any]:
    return {
        "name": name,
        "version": 1,
        "hash": f"{name}-hash",
        "tasks": [
            {"id": t, "bounds": {"random": lo, "reference": hi}} for t, (lo, hi) in tasks.items()
        ],
        "variants": list(variants),
        "seeds": list(seeds),
        "t_max": t_max,
        "eval_interval": eval_interval,
        "eval_episodes": 4,
    }


def _train_row(variant: str, t_env: int, rng: np.random.Generator) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": "train", "t_env": t_env, "loss_td": float(rng.gamma(2.0))}
    if "kalei" in variant:
        row.update(
            {
                "sparsity/fc1": 0.5 * t_env / (t_env + 500),
                "mask_distance": 0.1,
                "div_loss": float(rng.normal(1.0, 0.1)),
                "div_coef": 0.05,
                "n_reset": 0,
            }
        )
    if "alma" in variant:
        row.update({"alloc/entropy": float(rng.uniform(0.5, 1.0)), "alloc/changes": 2.0})
    return row


def _write_run(
    run_dir: Path,
    ident: dict[str, Any],
    bounds: tuple[float, float],
    skill: float,
    t_max: int,
    eval_interval: int,
    rng: np.random.Generator,
) -> None:
    lo, hi = bounds
    rows: list[dict[str, Any]] = []
    for t_env in range(0, t_max + 1, eval_interval):
        level = lo + (hi - lo) * skill * (1 - np.exp(-3 * t_env / t_max))
        returns = (level + rng.normal(0, 0.05 * abs(hi - lo), size=4)).tolist()
        rows.append(_train_row(ident["variant"], t_env, rng))
        rows.append(
            {
                "kind": "eval",
                "t_env": t_env,
                "return_mean": float(np.mean(returns)),
                "return_std": float(np.std(returns)),
                "n_episodes": 4,
                "returns": returns,
                "return_per_agent_mean": float(np.mean(returns)) / 3,
            }
        )
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    last = rows[-1]
    absolute = (last["return_mean"] + rng.normal(0, 0.01 * abs(hi - lo), size=40)).tolist()
    atomic_write_json(
        run_dir / "final.json",
        {
            **ident,
            "t_env": t_max,
            "n_agents": 3,
            "final_return": last["return_mean"],
            "final_return_per_agent": last["return_mean"] / 3,
            "final_returns": last["returns"],
            "absolute_return": float(np.mean(absolute)),
            "absolute_return_per_agent": float(np.mean(absolute)) / 3,
            "absolute_returns": absolute,
            "best_eval_t_env": t_max,
            "steps_per_second": 1000.0,
            "wall_time_s": t_max / 1000.0,
        },
    )
    atomic_write_json(
        run_dir / "status.json",
        {"state": "completed", "t_env": t_max, "heartbeat": 0.0, "error": None},
    )


def _write_spec(run_dir: Path, ident: dict[str, Any], t_max: int, eval_interval: int) -> None:
    spec = {
        **ident,
        "t_max": t_max,
        "n_envs": 1,
        "eval_interval": eval_interval,
        "eval_episodes": 4,
        "config": {},
        "task_spec": {},
        "config_hash": f"hash-{ident['variant']}",
        "versions": {"numpy": np.__version__},
        "git_sha": None,
        "platform": "synthetic",
        "python": "3",
        "numerics": {"hash": "synthetic-numerics"},
    }
    atomic_write_json(run_dir / "spec.json", spec)


def write_synthetic_results(
    root: str | Path,
    variants: Sequence[str] = ("qmix", "kalei-qmix"),
    tasks: dict[str, tuple[float, float]] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    skills: Sequence[float] | None = None,
    t_max: int = 1000,
    eval_interval: int = 250,
    not_applicable: Sequence[tuple[str, str]] = (),
    rng: np.random.Generator | None = None,
    compare: tuple[str, str] | None = None,
) -> Path:
    """Write a complete synthetic suite folder and return its path.

    Args:
        root: Folder to create (one suite).
        variants: Variant names; ``kalei``/``alma`` in a name adds those diagnostics.
        tasks: ``{task_id: (random, reference)}`` bounds; defaults to :data:`DEFAULT_TASKS`.
        seeds: Seeds of the grid.
        skills: Asymptotic normalised score per variant (default 0.5, 0.7, 0.9, ...).
        t_max: Steps per run.
        eval_interval: Steps between evals.
        not_applicable: ``(variant, task)`` cells written with status ``"n/a"``.
        rng: Source of the noise (default ``default_rng(0)``).
        compare: A declared comparison ``(a, b)`` written to ``suite.json`` (a headline suite).
    """
    root, rng = Path(root), rng or np.random.default_rng(0)
    tasks = tasks or DEFAULT_TASKS
    skills = skills or [0.5 + 0.2 * i for i in range(len(variants))]
    suite = _suite_json(root.name, tasks, variants, seeds, t_max, eval_interval)
    if compare is not None:
        suite["compare"] = {"a": compare[0], "b": compare[1]}
    atomic_write_json(root / "suite.json", suite)
    for variant, skill in zip(variants, skills, strict=True):
        for task, bounds in tasks.items():
            for seed in seeds:
                run_dir = root / variant / task_slug(task) / f"seed_{seed}"
                ident = {
                    "run_id": f"{variant}__{task}__s{seed}__abc",
                    "suite": root.name,
                    "variant": variant,
                    "task": task,
                    "seed": seed,
                }
                _write_spec(run_dir, ident, t_max, eval_interval)
                if (variant, task) in not_applicable:
                    atomic_write_json(
                        run_dir / "status.json",
                        {"state": "n/a", "t_env": 0, "heartbeat": 0.0, "error": "needs subtasks"},
                    )
                    continue
                _write_run(run_dir, ident, bounds, skill, t_max, eval_interval, rng)
    return root
