"""Run whole episodes of a batched task with a policy, into an EpisodeBatch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kaleibench.algos.base import Algorithm
from kaleibench.envs.base import BatchedTask
from kaleibench.train.buffer import EpisodeBatch

TRANSITION_FIELDS = ("task_rewards", "agent_rewards", "tasks_terminated")
"""``ts.info`` keys produced *by* a step: stored (B, T, ...) at the step that produced them.
Every other extra field describes the state before acting and is stored (B, T+1, ...)."""


class ExtraFields:
    """Per-step copies of the ``ts.info`` keys a policy lists in ``extra_fields``.

    State-like fields are read after ``policy.act`` (so a policy may add its own per-step
    decisions to ``ts.info``, e.g. ALMA's allocation); arrays are allocated at first sight.
    A key missing at some step (e.g. a decision at the final state) stays zero there.
    """

    def __init__(self, keys: tuple[str, ...], n_rows: int, t_max: int) -> None:
        self.keys, self.n_rows, self.t_max = tuple(keys), n_rows, t_max
        self.arrays: dict[str, np.ndarray] = {}

    def _store(self, info: dict[str, object], t: int, transition: bool) -> None:
        for key in self.keys:
            if (key in TRANSITION_FIELDS) != transition or key not in info:
                continue
            value = np.asarray(info[key])
            if key not in self.arrays:
                length = self.t_max if transition else self.t_max + 1
                self.arrays[key] = np.zeros((self.n_rows, length, *value.shape[1:]), value.dtype)
            self.arrays[key][:, t] = value

    def store_state(self, info: dict[str, object], t: int) -> None:
        """Store the state-like fields of step ``t`` ((B, T+1, ...) arrays)."""
        if self.keys:
            self._store(info, t, transition=False)

    def store_transition(self, info: dict[str, object], t: int) -> None:
        """Store the fields produced by transition ``t`` ((B, T, ...) arrays)."""
        if self.keys:
            self._store(info, t, transition=True)


@dataclass
class Rollout:
    """Episodes collected from one reset of all rows."""

    batch: EpisodeBatch
    returns: np.ndarray  # (B,) team return
    agent_returns: np.ndarray  # (B, N)
    steps: int  # env steps taken, summed over rows


def collect(
    env: BatchedTask, policy: Algorithm, t_env: int, explore: bool,
    seeds: Sequence[int] | None = None,
) -> Rollout:
    """Play one episode in every row (all rows act in one forward pass per step).

    Buffers are preallocated (B, T+1, ...) arrays; ``filled`` marks steps before each row's end.
    """
    b, n, t_max = env.n_envs, env.n_agents, env.episode_limit
    obs = np.zeros((b, t_max + 1, n, env.obs_dim), dtype=np.float32)
    state = np.zeros((b, t_max + 1, env.state_dim), dtype=np.float32)
    avail = np.zeros((b, t_max + 1, n, env.n_actions), dtype=bool)
    actions = np.zeros((b, t_max, n), dtype=np.int64)
    reward = np.zeros((b, t_max), dtype=np.float32)
    agent_returns = np.zeros((b, n), dtype=np.float64)
    terminated = np.zeros((b, t_max), dtype=bool)
    truncated = np.zeros((b, t_max), dtype=bool)
    filled = np.zeros((b, t_max), dtype=bool)
    ts = env.reset(seeds)
    hidden = policy.init_hidden(b)
    alive = np.ones(b, dtype=bool)
    extra = ExtraFields(getattr(policy, "extra_fields", ()), b, t_max)
    t = 0
    while alive.any():
        if t >= t_max:
            raise RuntimeError(f"task {env.spec.id} ran past its episode limit {t_max}")
        obs[:, t], state[:, t], avail[:, t] = ts.obs, ts.state, ts.avail_actions
        act, hidden = policy.act(ts, hidden, t_env, explore)
        extra.store_state(ts.info, t)
        ts = env.step(act)
        extra.store_transition(ts.info, t)
        actions[:, t], reward[:, t] = act, ts.reward
        terminated[:, t], truncated[:, t], filled[:, t] = ts.terminated, ts.truncated, alive
        agent_returns += ts.info["agent_rewards"] * alive[:, None]
        ended = ts.terminated | ts.truncated
        if ended.any() and not ended.all():
            raise RuntimeError("rows ended at different steps; the mpe tasks end together")
        alive &= ~ended
        t += 1
    obs[:, t], state[:, t], avail[:, t] = ts.obs, ts.state, ts.avail_actions
    extra.store_state(ts.info, t)
    data = {
        "obs": obs, "state": state, "avail_actions": avail, "actions": actions,
        "reward": reward, "terminated": terminated, "truncated": truncated, "filled": filled,
        **extra.arrays,
    }
    batch = EpisodeBatch({k: torch.from_numpy(v) for k, v in data.items()})
    returns = (reward * filled).sum(axis=1).astype(np.float64)
    return Rollout(batch, returns, agent_returns, int(filled.sum()))


def evaluate(env: BatchedTask, policy: Algorithm, seeds: Sequence[int], t_env: int) -> np.ndarray:
    """Greedy team returns (len(seeds),) on the given episode seeds, B rows at a time."""
    b = env.n_envs
    padded = list(seeds) + [seeds[-1]] * ((-len(seeds)) % b)
    returns = []
    for k in range(0, len(padded), b):
        returns.append(collect(env, policy, t_env, explore=False, seeds=padded[k : k + b]).returns)
    return np.concatenate(returns)[: len(seeds)]
