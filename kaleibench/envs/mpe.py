"""The mpe2 backend: one mpe2 ``parallel_env`` per batch row (the verified reference backend).

Rewards and observations are read over ``possible_agents`` so the last (truncating) step's reward
is kept: PettingZoo empties ``agents`` after that step, which is how EPyMARL's wrapper loses it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from kaleibench.envs.base import TaskSpec, TimeStep
from kaleibench.envs.entities import entity_layout, entity_view
from kaleibench.envs.scripted import opponent_action, opponent_noise
from kaleibench.envs.sight import observe, sight_layout


def episode_streams(seed: int, n_opponents: int) -> list[np.random.Generator]:
    """Independent generators for the scripted opponents of one episode, from its seed."""
    children = np.random.SeedSequence([seed, 0x5C21]).spawn(n_opponents)
    return [np.random.default_rng(c) for c in children]


class Mpe2Task:
    """``B`` rows of one MPE scenario, each an mpe2 parallel env; see :class:`BatchedTask`."""

    def __init__(self, spec: TaskSpec, n_envs: int, seed: int) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        module = importlib.import_module(f"mpe2.{spec.scenario}")
        self.spec = spec
        self.n_envs = n_envs
        self.envs = [module.parallel_env(**dict(spec.kwargs)) for _ in range(n_envs)]
        env0 = self.envs[0]
        names = list(env0.possible_agents)
        missing = [a for a in (*spec.team, *(o for o, _ in spec.opponents)) if a not in names]
        if missing:
            raise ValueError(f"task {spec.id}: agents {missing} not in mpe2 agents {names}")
        self.team = list(spec.team)
        self.n_agents = len(self.team)
        self._full_sizes = [env0.observation_space(a).shape[0] for a in self.team]
        self._full_dim = max(self._full_sizes)
        self._sight = sight_layout(spec)
        extra = self._sight.n_slots if self._sight is not None else 0
        self.obs_sizes = [s + extra for s in self._full_sizes]
        self.action_sizes = [int(env0.action_space(a).n) for a in self.team]
        self.obs_dim = max(self.obs_sizes)
        self.n_actions = max(self.action_sizes)
        self.state_dim = self.n_agents * self._full_dim  # the unmasked observations
        self.episode_limit = spec.max_cycles
        self._opp_actions = [int(env0.action_space(o).n) for o, _ in spec.opponents]
        self._avail = np.zeros((self.n_agents, self.n_actions), dtype=bool)
        for i, n in enumerate(self.action_sizes):
            self._avail[i, :n] = True
        self._seed_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE5]))
        self._opp_noise = np.full((n_envs, len(spec.opponents), self.episode_limit), -1)
        self._t = 0
        self._last_raw_obs: list[dict[str, np.ndarray]] = [{} for _ in range(n_envs)]
        self._done = np.zeros(n_envs, dtype=bool)
        self._layout = entity_layout(spec) if spec.has_subtasks else None
        self.entity_view = self._layout is not None
        """Whether time steps carry the entity view in ``info`` (tasks with subtasks only). A
        learner that never reads it (the QMIX family) may switch it off: nothing else changes."""

    # ------------------------------------------------------------------ helpers
    def _positions(self) -> np.ndarray:
        """(B, W, 2) float64 world positions of every row, in ``world.entities`` order."""
        worlds = [env.unwrapped.world for env in self.envs]
        return np.stack([[e.state.p_pos for e in w.entities] for w in worlds])

    def _entity_info(self, team_reward: np.ndarray | None) -> dict[str, np.ndarray]:
        """The entity view (entities, subtasks, task rewards) read from every row's mpe2 world."""
        assert self._layout is not None
        worlds = [env.unwrapped.world for env in self.envs]
        pos = self._positions()  # (B, W, 2)
        vel = np.stack([[e.state.p_vel for e in w.entities] for w in worlds])  # (B, W, 2)
        goal = np.zeros(self.n_envs, dtype=np.int64)
        if self.spec.scenario == "simple_adversary_v3":
            goal[:] = [w.landmarks.index(w.agents[-1].goal_a) for w in worlds]
        return entity_view(self._layout, pos, vel, goal, team_reward, self.spec.sight_radius)

    def _pack(self, raw: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        full = np.zeros((self.n_envs, self.n_agents, self._full_dim), dtype=np.float32)
        for b, row in enumerate(raw):
            for i, name in enumerate(self.team):
                full[b, i, : self._full_sizes[i]] = row[name]
        state = full.reshape(self.n_envs, -1).copy()
        if self._sight is None:
            return full, state
        return observe(self._sight, full, self._positions()), state

    def _timestep(
        self, raw_obs: list[dict[str, Any]], agent_rewards: np.ndarray, term: np.ndarray,
        trunc: np.ndarray,
    ) -> TimeStep:
        obs, state = self._pack(raw_obs)
        avail = np.broadcast_to(self._avail, (self.n_envs, *self._avail.shape)).copy()
        reward = agent_rewards.sum(axis=1).astype(np.float32)
        info: dict[str, Any] = {"agent_rewards": agent_rewards}
        if self._layout is not None and self.entity_view:
            info.update(self._entity_info(reward if self._t > 0 else None))
        return TimeStep(
            obs=obs,
            state=state,
            avail_actions=avail,
            reward=reward,
            terminated=term,
            truncated=trunc,
            info=info,
        )

    # ------------------------------------------------------------------ API
    def reset(self, seeds: Sequence[int] | None = None) -> TimeStep:
        """Reset every row; ``seeds`` (len B) fix the episodes, else drawn from the seed stream."""
        if seeds is None:
            seeds = [int(s) for s in self._seed_rng.integers(0, 2**31 - 1, size=self.n_envs)]
        if len(seeds) != self.n_envs:
            raise ValueError(f"reset needs {self.n_envs} seeds, got {len(seeds)}")
        raw = []
        for b, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            obs, _ = env.reset(seed=int(s))
            raw.append(obs)
            streams = episode_streams(int(s), len(self.spec.opponents))
            for k, rng in enumerate(streams):
                self._opp_noise[b, k] = opponent_noise(
                    rng, self.episode_limit, self.spec.opponent_eps, self._opp_actions[k]
                )
        self._last_raw_obs = raw
        self._done[:] = False
        self._t = 0
        zeros = np.zeros((self.n_envs, self.n_agents), dtype=np.float32)
        flags = np.zeros(self.n_envs, dtype=bool)
        return self._timestep(raw, zeros, flags, flags.copy())

    def opponent_actions(self, row: int) -> dict[str, int]:
        """The scripted opponents' actions for ``row`` from their current observations."""
        acts = {}
        for k, (name, policy) in enumerate(self.spec.opponents):
            noise = int(self._opp_noise[row, k, self._t])
            obs = self._last_raw_obs[row][name]
            acts[name] = opponent_action(policy, obs, self.spec, noise)
        return acts

    def step(self, actions: np.ndarray) -> TimeStep:
        """Step every row with ``actions`` (B, N); see :class:`BatchedTask`."""
        actions = np.asarray(actions)
        if actions.shape != (self.n_envs, self.n_agents):
            raise ValueError(f"actions must be {(self.n_envs, self.n_agents)}, got {actions.shape}")
        if self._done.any():
            raise RuntimeError("step() called on a row whose episode has ended; reset() first")
        raw, rewards = [], np.zeros((self.n_envs, self.n_agents), dtype=np.float32)
        term = np.zeros(self.n_envs, dtype=bool)
        trunc = np.zeros(self.n_envs, dtype=bool)
        for b, env in enumerate(self.envs):
            act = {name: int(actions[b, i]) for i, name in enumerate(self.team)}
            for i, name in enumerate(self.team):
                if not 0 <= act[name] < self.action_sizes[i]:
                    raise ValueError(f"action {act[name]} unavailable for {name} (row {b})")
            act.update(self.opponent_actions(b))
            obs, rew, terms, truncs, _ = env.step(act)
            raw.append(obs)
            rewards[b] = [rew[name] for name in self.team]
            term[b] = any(terms[a] for a in env.possible_agents)
            trunc[b] = (not term[b]) and any(truncs[a] for a in env.possible_agents)
        self._last_raw_obs = raw
        self._t += 1
        self._done = term | trunc
        return self._timestep(raw, rewards, term, trunc)

    def close(self) -> None:
        """Close every mpe2 env."""
        for env in self.envs:
            env.close()
