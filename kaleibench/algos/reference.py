"""Reference policies: uniform random and the task's scripted heuristic.

Their evaluated returns are the fixed normalisation bounds suites declare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kaleibench.algos.base import EnvInfo
from kaleibench.envs.base import TimeStep
from kaleibench.envs.scripted import team_heuristic
from kaleibench.train.buffer import EpisodeBatch
from kaleibench.utils.seeding import numpy_stream


@dataclass(frozen=True)
class NoConfig:
    """Reference policies have no hyperparameters."""


class _Fixed:
    learns = False
    needs_subtasks = False
    Config = NoConfig

    def init_hidden(self, batch_size: int) -> Any:
        return None

    def train_on(self, batch: EpisodeBatch, t_env: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def policy_state(self) -> dict[str, Any]:
        return {}

    def load_policy_state(self, state: dict[str, Any]) -> None:
        return None


class RandomPolicy(_Fixed):
    """Uniform over each agent's available actions (seeded ``act`` stream)."""

    def __init__(self, config: NoConfig, env_info: EnvInfo, seed: int) -> None:
        self.rng = numpy_stream(seed, "act")

    def act(self, ts: TimeStep, hidden: Any, t_env: int, explore: bool) -> tuple[np.ndarray, Any]:
        """Random available action per agent."""
        avail = ts.avail_actions  # (B, N, A)
        u = self.rng.random(avail.shape) * avail  # (B, N, A): unavailable scores 0
        return u.argmax(axis=-1), None


class HeuristicPolicy(_Fixed):
    """The task's scripted team policy (see ``kaleibench.envs.scripted``)."""

    def __init__(self, config: NoConfig, env_info: EnvInfo, seed: int) -> None:
        self.spec = env_info.task
        if not self.spec.heuristic:
            raise ValueError(f"task {self.spec.id} declares no heuristic")

    def act(self, ts: TimeStep, hidden: Any, t_env: int, explore: bool) -> tuple[np.ndarray, Any]:
        """Scripted actions, row by row."""
        rows = [team_heuristic(self.spec, ts.obs[b]) for b in range(ts.obs.shape[0])]
        return np.stack(rows), None
