"""RunSpec: one (variant, task, seed, budget) cell with a stable id and folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaleibench.algos import Variant
from kaleibench.config import stable_hash


def task_slug(task_id: str) -> str:
    """Folder name of a task id: ``mpe/spread-v0`` -> ``mpe__spread-v0``."""
    return task_id.replace("/", "__")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's numbers (``n_envs`` included)."""

    suite: str
    variant: Variant
    task: str
    seed: int
    t_max: int
    n_envs: int = 8
    eval_interval: int = 10_000
    eval_episodes: int = 32
    log_interval: int = 2_000
    checkpoint_interval: int = 50_000
    backend: str = "numpy"
    tensorboard: bool = False
    """Also write the metrics rows as TensorBoard scalars (output only: not in the identity)."""
    sinks: tuple[str, ...] = ()
    """More metrics sinks, e.g. ``("csv", "wandb")`` (:mod:`kaleibench.utils.sinks`; output
    only: not in the identity)."""

    def __post_init__(self) -> None:
        from kaleibench.envs import task_spec

        # task-dependent config fields (the time-limit semantics) are resolved here, so that
        # spec.json, the config hash and the learner all see the same, explicit value
        object.__setattr__(self, "variant", self.variant.for_task(task_spec(self.task)))
        for name in ("t_max", "n_envs", "eval_interval", "eval_episodes", "log_interval",
                     "checkpoint_interval"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def identity(self) -> dict[str, Any]:
        """What the config hash covers (``checkpoint_interval``, ``log_interval`` and
        ``tensorboard`` do not change results; the backend must not either, but is recorded in
        spec.json)."""
        from kaleibench.envs import task_spec

        return {
            "variant": self.variant.to_json(), "task": task_spec(self.task).to_json(),
            "seed": self.seed, "t_max": self.t_max, "n_envs": self.n_envs,
            "eval_interval": self.eval_interval, "eval_episodes": self.eval_episodes,
        }

    @property
    def config_hash(self) -> str:
        """Hash of :meth:`identity`."""
        return stable_hash(self.identity())

    @property
    def run_id(self) -> str:
        """``<variant>__<task>__s<seed>__<confighash>``."""
        return f"{self.variant.name}__{task_slug(self.task)}__s{self.seed}__{self.config_hash}"

    def run_dir(self, root: str | Path) -> Path:
        """``<root>/<variant>/<task_slug>/seed_<k>``; root is the suite's results folder."""
        return Path(root) / self.variant.name / task_slug(self.task) / f"seed_{self.seed}"
