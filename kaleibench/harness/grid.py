"""Suite × overrides -> RunSpecs (the grid), with N/A cells for unsupported pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kaleibench.algos import Variant, load_variant
from kaleibench.envs import task_spec
from kaleibench.harness.suite import Suite
from kaleibench.overrides import resolve
from kaleibench.train.spec import RunSpec


@dataclass(frozen=True)
class Cell:
    """One grid cell: a runnable spec, or a reason why the variant cannot run on the task."""

    spec: RunSpec
    na_reason: str | None = None


def expand(suite: Suite, variants: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
           seeds: Sequence[int] | None = None) -> list[Cell]:
    """All cells of ``suite`` (optionally restricted/overridden), in a stable order."""
    chosen: list[Variant] = [load_variant(v) if isinstance(v, str) else resolve(v)
                             for v in (variants or suite.variants)]
    task_ids = list(tasks or [t.id for t in suite.tasks])
    cells = []
    for variant in chosen:
        for task_id in task_ids:
            spec_t = task_spec(task_id)
            for seed in seeds if seeds is not None else suite.seeds:
                spec = RunSpec(
                    suite=suite.name, variant=variant, task=task_id, seed=seed,
                    t_max=suite.t_max, n_envs=suite.n_envs, eval_interval=suite.eval_interval,
                    eval_episodes=suite.eval_episodes, log_interval=suite.log_interval,
                    checkpoint_interval=suite.checkpoint_interval, backend=suite.backend)
                reason = None
                if variant.needs_subtasks and not spec_t.has_subtasks:
                    reason = f"{variant.name} needs subtasks; {task_id} has none"
                cells.append(Cell(spec, reason))
    return cells
