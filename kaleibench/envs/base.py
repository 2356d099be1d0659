"""The batched cooperative task interface every backend implements.

A task steps ``B`` independent copies of one MPE scenario ("rows") in lockstep and reports them
over the *controlled* team only; scripted opponents live inside the task. Shapes use B rows,
N controlled agents, O padded observation size, S state size, A actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class TimeStep:
    """What a task returns from ``reset`` and ``step``.

    ``terminated`` is a true end of the MDP (no bootstrap); ``truncated`` is the time limit
    (bootstrap through it). They are never merged here: learners decide what to do with them.
    """

    obs: np.ndarray  # (B, N, O) float32, zero-padded to the longest observation
    state: np.ndarray  # (B, S) float32, concatenated padded observations of the team
    avail_actions: np.ndarray  # (B, N, A) bool
    reward: np.ndarray  # (B,) float32, team reward = sum over controlled agents
    terminated: np.ndarray  # (B,) bool
    truncated: np.ndarray  # (B,) bool
    info: dict[str, Any] = field(default_factory=dict)  # "agent_rewards": (B, N), ...


@dataclass(frozen=True)
class TaskSpec:
    """Everything that defines a task id; every kwarg is pinned here, never at make() time."""

    id: str
    """Versioned id, e.g. ``mpe/spread-v0``."""
    scenario: str
    """mpe2 module name, e.g. ``simple_spread_v3``."""
    kwargs: tuple[tuple[str, Any], ...]
    """Pinned constructor kwargs of the mpe2 parallel env (max_cycles, N, local_ratio, ...)."""
    team: tuple[str, ...]
    """mpe2 agent names of the controlled (learning) team, in order."""
    opponents: tuple[tuple[str, str], ...] = ()
    """(mpe2 agent name, scripted policy name) for every agent the task plays itself."""
    heuristic: str = ""
    """Name of the scripted team policy used as the `heuristic` reference variant."""
    opponent_eps: float = 0.1
    """Probability that a scripted opponent takes a uniformly random action (seeded)."""
    has_subtasks: bool = False
    """Whether the task exposes an entity view with subtasks (ALMA-style variants need it)."""
    time_limit_is_task: bool = True
    """Whether the time limit is part of the task. If so (every MPE task: the score is the
    undiscounted return of exactly ``max_cycles`` steps), learners treat reaching it as terminal
    and do not bootstrap through it; if not (an artificial cut of an unlimited task), they
    bootstrap. The env reports ``truncated`` either way, as mpe2 does."""
    summary: str = ""
    sight_radius: float | None = None
    """Partial observability: each controlled agent sees only the entities within this distance
    (see ``kaleibench.envs.sight``); None = fully observed (every task before the sight
    variants). The state stays global either way."""

    @property
    def n_agents(self) -> int:
        """Number of controlled agents N."""
        return len(self.team)

    @property
    def max_cycles(self) -> int:
        """Episode length in steps (the time limit; reaching it truncates)."""
        return int(dict(self.kwargs)["max_cycles"])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description, stored in every run's spec.json.

        ``sight_radius`` appears only when set, so the fully observed tasks' descriptions (and
        the config hashes of their runs) are what they were before the field existed.
        """
        out: dict[str, Any] = {
            "id": self.id,
            "scenario": self.scenario,
            "kwargs": dict(self.kwargs),
            "team": list(self.team),
            "opponents": [list(o) for o in self.opponents],
            "heuristic": self.heuristic,
            "opponent_eps": self.opponent_eps,
            "has_subtasks": self.has_subtasks,
            "time_limit_is_task": self.time_limit_is_task,
        }
        if self.sight_radius is not None:
            out["sight_radius"] = self.sight_radius
        return out


class BatchedTask(Protocol):
    """What the training loop needs from a task; backends are interchangeable behind it."""

    spec: TaskSpec
    n_envs: int
    n_agents: int
    obs_dim: int
    state_dim: int
    n_actions: int
    episode_limit: int
    entity_view: bool
    """Whether time steps carry the entity view (subtask tasks; may be switched off)."""

    def reset(self, seeds: Sequence[int] | None = None) -> TimeStep:
        """Start a new episode in every row; ``seeds`` (one per row) fix the episodes."""
        ...

    def step(self, actions: np.ndarray) -> TimeStep:
        """Apply ``actions`` (B, N) int; rows must not be stepped past their episode end."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...
