"""What every variant implements, and the environment facts it is built from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kaleibench.envs.base import BatchedTask, TaskSpec, TimeStep
from kaleibench.train.buffer import EpisodeBatch


@dataclass(frozen=True)
class EnvInfo:
    """Sizes of a task, as a learner needs them."""

    task: TaskSpec
    n_agents: int
    obs_dim: int
    state_dim: int
    n_actions: int
    episode_limit: int
    t_max: int = 0
    """The run's budget in env steps, for schedules defined relative to it (0 = unknown)."""

    @classmethod
    def of(cls, env: BatchedTask, t_max: int = 0) -> EnvInfo:
        """Read the sizes off a built task."""
        return cls(env.spec, env.n_agents, env.obs_dim, env.state_dim, env.n_actions,
                   env.episode_limit, t_max)


def resolve_timeout_is_terminal(config: Any, task: TaskSpec) -> Any:
    """``config`` with ``timeout_is_terminal`` decided by the task when the config leaves it open.

    A learner that bootstraps must know whether reaching the time limit ends the task. ``None``
    (the default of every bootstrapping variant) means "ask the task": terminal when the task
    declares its limit part of the task (every MPE task), bootstrapped through otherwise.
    ``true``/``false`` force either behaviour for studies. The resolved value is what spec.json
    records and what the config hash covers. Configs without the field are returned unchanged.
    """
    if getattr(config, "timeout_is_terminal", False) is None:
        return dataclasses.replace(config, timeout_is_terminal=task.time_limit_is_task)
    return config


def done_mask(terminated: Any, truncated: Any, timeout_is_terminal: bool) -> Any:
    """``done = terminated | (truncated & timeout_is_terminal)`` as a float tensor (B, T)."""
    done = terminated.float()
    if timeout_is_terminal:
        done = done.maximum(truncated.float())
    return done


class Algorithm(Protocol):
    """A variant's learner/policy, driven by the training loop.

    ``act`` sees the whole batch of rows at once (one forward pass); ``train_on`` receives the
    episodes just collected, stores them and performs the variant's updates.
    """

    learns: bool
    needs_subtasks: bool

    def init_hidden(self, batch_size: int) -> Any:
        """Per-episode recurrent state for ``batch_size`` rows."""
        ...

    def act(self, ts: TimeStep, hidden: Any, t_env: int, explore: bool) -> tuple[np.ndarray, Any]:
        """Actions (B, N) int for the rows of ``ts`` and the next recurrent state."""
        ...

    def train_on(self, batch: EpisodeBatch, t_env: int) -> dict[str, float]:
        """Store ``batch`` and update; return metrics of the last update (may be empty)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Full learner state for checkpoints (nets, targets, optimisers, buffer, RNG streams)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        ...

    def policy_state(self) -> dict[str, Any]:
        """Only what acting greedily needs (the evaluated/best parameters)."""
        ...

    def load_policy_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`policy_state`."""
        ...
