"""Run whole episodes of a batched task with a policy, into an EpisodeBatch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kaleibench.algos.base import Algorithm
from kaleibench.envs.base import BatchedTask
from kaleibench.train.buffer import EpisodeBatch


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
    t = 0
    while alive.any():
        if t >= t_max:
            raise RuntimeError(f"task {env.spec.id} ran past its episode limit {t_max}")
        obs[:, t], state[:, t], avail[:, t] = ts.obs, ts.state, ts.avail_actions
        act, hidden = policy.act(ts, hidden, t_env, explore)
        ts = env.step(act)
        actions[:, t], reward[:, t] = act, ts.reward
        terminated[:, t], truncated[:, t], filled[:, t] = ts.terminated, ts.truncated, alive
        agent_returns += ts.info["agent_rewards"] * alive[:, None]
        ended = ts.terminated | ts.truncated
        if ended.any() and not ended.all():
            raise RuntimeError("rows ended at different steps; the mpe tasks end together")
        alive &= ~ended
        t += 1
    obs[:, t], state[:, t], avail[:, t] = ts.obs, ts.state, ts.avail_actions
    data = {
        "obs": obs, "state": state, "avail_actions": avail, "actions": actions,
        "reward": reward, "terminated": terminated, "truncated": truncated, "filled": filled,
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
