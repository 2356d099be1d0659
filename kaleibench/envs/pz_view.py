"""Any kaleibench task as a one-row PettingZoo ``ParallelEnv`` (scripted opponents inside).

The view exposes only the controlled team as PettingZoo agents, with unpadded per-agent
observations and the team's own action spaces, so other libraries can train on kaleibench's exact
tasks. ``reset(seed=s)`` plays the episode that seed ``s`` names in every backend; unseeded resets
draw episode seeds from a stream that the last seeded reset (or the constructor's ``seed``) fixes.

Example:
    >>> env = parallel_env("mpe/spread-v0", backend="numpy")
    >>> obs, infos = env.reset(seed=0)
    >>> sorted(obs), obs["agent_0"].shape
    (['agent_0', 'agent_1', 'agent_2'], (18,))
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo.utils.env import ParallelEnv

_STREAM_KEY = 0x9E  # separates the view's episode-seed stream from the task's own


class TaskParallelEnv(ParallelEnv):  # type: ignore[type-arg]
    """One row of a kaleibench task behind PettingZoo's parallel API."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10,
                                "is_parallelizable": True}

    def __init__(self, task_id: str, backend: str = "numpy", seed: int = 0,
                 render_mode: str | None = None) -> None:
        from kaleibench.envs import make

        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        if render_mode == "rgb_array":
            # frames come from mpe2's own renderer, so the episode is played on the mpe2
            # backend (transition for transition the same as every other backend)
            from kaleibench.render import _rendering_task

            self.task = _rendering_task(task_id)
            backend = "mpe2"
        else:
            self.task = make(task_id, n_envs=1, seed=seed, backend=backend)
        sizes: list[int] = list(self.task.obs_sizes)  # type: ignore[attr-defined]
        n_act: list[int] = list(self.task.action_sizes)  # type: ignore[attr-defined]
        self.metadata = {**self.metadata, "name": f"kaleibench/{task_id}:{backend}"}
        self.possible_agents = list(self.task.spec.team)
        self.agents: list[str] = []
        inf = np.float32(np.inf)
        self.observation_spaces = {
            a: spaces.Box(-inf, inf, shape=(sizes[i],), dtype=np.float32)
            for i, a in enumerate(self.possible_agents)
        }
        self.action_spaces = {
            a: spaces.Discrete(n_act[i]) for i, a in enumerate(self.possible_agents)
        }
        self.state_space = spaces.Box(-inf, inf, shape=(self.task.state_dim,), dtype=np.float32)
        self._sizes = sizes
        self._stream = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_KEY]))
        self._state = np.zeros(self.task.state_dim, dtype=np.float32)

    def observation_space(self, agent: str) -> spaces.Space:  # type: ignore[type-arg]
        """The (unpadded) observation Box of ``agent``; the same object on every call."""
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:  # type: ignore[type-arg]
        """The Discrete action space of ``agent``; the same object on every call."""
        return self.action_spaces[agent]

    def _obs(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Per-agent observations from the task's padded (1, N, O) array."""
        return {a: obs[0, i, : self._sizes[i]].copy() for i, a in enumerate(self.possible_agents)}

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start an episode: seed ``seed`` if given, else the next seed of the view's stream."""
        if seed is not None:
            self._stream = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_KEY]))
            episode_seed = int(seed)
        else:
            episode_seed = int(self._stream.integers(0, 2**31 - 1))
        ts = self.task.reset([episode_seed])
        self.agents = self.possible_agents[:]
        self._state = ts.state[0].copy()
        return self._obs(ts.obs), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[
        dict[str, np.ndarray], dict[str, float], dict[str, bool], dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """Step the team with one action per live agent; opponents act inside the task."""
        if not self.agents:
            raise RuntimeError("step() after the episode ended; call reset() first")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"missing actions for {missing}")
        arr = np.array([[int(actions[a]) for a in self.possible_agents]], dtype=np.int64)
        ts = self.task.step(arr)
        self._state = ts.state[0].copy()
        rewards = ts.info["agent_rewards"][0]
        term, trunc = bool(ts.terminated[0]), bool(ts.truncated[0])
        obs = self._obs(ts.obs)
        out_rew = {a: float(rewards[i]) for i, a in enumerate(self.possible_agents)}
        terms = {a: term for a in self.possible_agents}
        truncs = {a: trunc for a in self.possible_agents}
        infos: dict[str, dict[str, Any]] = {a: {} for a in self.possible_agents}
        if term or trunc:
            self.agents = []
        return obs, out_rew, terms, truncs, infos

    def state(self) -> np.ndarray:
        """(S,) float32 global state: the team's zero-padded observations, concatenated."""
        return self._state.copy()

    def render(self) -> np.ndarray | None:
        """With ``render_mode="rgb_array"``: the current frame, (H, W, 3) uint8; else None."""
        if self.render_mode != "rgb_array":
            return None
        return np.array(self.task.envs[0].render(), copy=True)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Release the underlying task."""
        self.task.close()


def parallel_env(task_id: str, backend: str = "numpy", seed: int = 0,
                 render_mode: str | None = None) -> TaskParallelEnv:
    """Open task ``task_id`` as a one-row PettingZoo ``ParallelEnv`` on ``backend``.

    ``render_mode="rgb_array"`` makes :meth:`TaskParallelEnv.render` return frames; the episode
    then runs on the ``mpe2`` backend, which draws them.
    """
    return TaskParallelEnv(task_id, backend=backend, seed=seed, render_mode=render_mode)
