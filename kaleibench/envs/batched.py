"""The numpy backend: all ``B`` rows of a task stepped at once with vectorised MPE physics.

It reproduces mpe2 1.1.1 transition for transition (see ``tests/test_batched.py``):

* resets draw each row's world from ``PCG64(SeedSequence(seed))`` in the scenario's draw order,
  exactly as mpe2's ``SimpleEnv.reset(seed)`` does through ``gymnasium.utils.seeding.np_random``;
  the scripted opponents' exploration plan comes from the same per-episode streams as
  :class:`kaleibench.envs.mpe.Mpe2Task`, so one seed gives the same episode on both backends;
* one step follows mpe2's ``World.step``: action forces, soft contact forces between colliding
  entities (summed per entity in partner order, as mpe2's pair loop does), integration with
  damping and speed clipping, then communication; the float operations keep mpe2's order.

The hot path (``step``) has no Python loop over rows; resets loop over rows once per episode.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kaleibench.envs.base import TaskSpec, TimeStep
from kaleibench.envs.batched_scenarios import SCENARIOS, Scenario, WorldState
from kaleibench.envs.entities import entity_layout, entity_view
from kaleibench.envs.mpe import episode_streams
from kaleibench.envs.scripted import opponent_noise

DT = 0.1
DAMPING = 0.25
CONTACT_FORCE = 1e2
CONTACT_MARGIN = 1e-3
_MOVES = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])  # (5, 2)


class Physics:
    """mpe2's ``World.step`` for one scenario's entity layout, over ``B`` rows at once."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        n_agents = sc.n_agents
        colliders = np.flatnonzero(sc.collide)  # (C,) entity indices, agents first
        self.colliders = colliders
        self.collider_agents = colliders[colliders < n_agents]  # (Ca,)
        size = sc.size[colliders]
        self.dist_min = size[:, None] + size[None, :]  # (C, C)
        self.diag = np.eye(len(colliders), dtype=bool)  # (C, C)
        self.movable = np.flatnonzero(sc.movable)  # (M,) agent (= entity) indices
        self.talkers = np.flatnonzero(~sc.silent)  # (T,)
        self.max_speed = sc.max_speed[self.movable][None, :]  # (1, M)
        self.accel = sc.accel[:, None]  # (A, 1)

    def contact_forces(self, pos: np.ndarray, force: np.ndarray) -> None:
        """Add the soft contact forces between colliding entities to ``force`` (B, A, 2)."""
        if len(self.collider_agents) == 0 or len(self.colliders) < 2:
            return
        p = pos[:, self.colliders]  # (B, C, 2)
        delta = p[:, :, None, :] - p[:, None, :, :]  # (B, C, C, 2): p_i - p_j
        dist = np.sqrt(delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1])  # (B, C, C)
        dist[:, self.diag] = np.inf  # no self-contact: the force below becomes exactly 0
        penetration = np.logaddexp(0.0, -(dist - self.dist_min) / CONTACT_MARGIN) * CONTACT_MARGIN
        f = CONTACT_FORCE * delta / dist[..., None] * penetration[..., None]  # (B, C, C, 2)
        n_ca = len(self.collider_agents)
        acc = force[:, self.collider_agents]  # (B, Ca, 2)
        for j in range(len(self.colliders)):  # mpe2 adds the partners' forces in entity order
            acc = f[:, :n_ca, j] + acc
        force[:, self.collider_agents] = acc

    def step(self, w: WorldState, actions: np.ndarray) -> None:
        """Advance ``w`` in place by one step of mpe2 physics.

        Args:
            w: the B worlds.
            actions: (B, A) int discrete actions of every mpe2 agent (team and opponents).
        """
        sc = self.sc
        move = np.where(sc.movable, actions % 5, 0)  # (B, A)
        force = _MOVES[move] * self.accel  # (B, A, 2): u = one-hot direction * sensitivity
        self.contact_forces(w.pos, force)
        mv = self.movable
        vel = w.vel[:, mv]  # (B, M, 2)
        w.pos[:, mv] = w.pos[:, mv] + vel * DT
        vel = vel * (1 - DAMPING)
        vel = vel + force[:, mv] * DT  # every mass is 1.0 in these scenarios (force / 1.0 exact)
        speed = np.sqrt(vel[..., 0] * vel[..., 0] + vel[..., 1] * vel[..., 1])  # (B, M)
        over = speed > self.max_speed
        if over.any():
            denom = np.where(over, speed, 1.0)[..., None]
            vel = np.where(over[..., None], vel / denom * self.max_speed[..., None], vel)
        w.vel[:, mv] = vel
        if len(self.talkers):
            t = self.talkers
            msg = np.where(sc.movable[t], actions[:, t] // 5, actions[:, t])  # (B, T)
            w.comm[:, t] = np.eye(sc.dim_c)[msg]  # (B, T, C) one-hot, as mpe2's action.c


class NumpyTask:
    """``B`` rows of one MPE scenario stepped together in numpy; see :class:`BatchedTask`."""

    def __init__(self, spec: TaskSpec, n_envs: int, seed: int) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if spec.scenario not in SCENARIOS:
            raise ValueError(f"task {spec.id}: no numpy scenario for {spec.scenario!r}")
        if dict(spec.kwargs).get("continuous_actions", False):
            raise ValueError(f"task {spec.id}: the numpy backend is discrete-action only")
        self.spec = spec
        self.n_envs = n_envs
        self.scenario = sc = SCENARIOS[spec.scenario](spec)
        self.physics = Physics(sc)
        self.team = list(spec.team)
        self.n_agents = len(self.team)
        self.obs_sizes = list(sc.obs_sizes)
        self.action_sizes = [int(n) for n in sc.n_actions[sc.team_idx]]
        self.obs_dim = max(self.obs_sizes)
        self.n_actions = max(self.action_sizes)
        self.state_dim = self.n_agents * self.obs_dim
        self.episode_limit = spec.max_cycles
        self._team_limits = np.array(self.action_sizes)  # (N,)
        self._opp_actions = [int(sc.n_actions[k]) for k in sc.opp_idx]
        self._avail = np.arange(self.n_actions)[None, :] < self._team_limits[:, None]  # (N, A)
        self._seed_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE5]))
        n_ent = sc.n_agents + sc.n_landmarks
        self.world = WorldState(
            pos=np.zeros((n_envs, n_ent, 2)),
            vel=np.zeros((n_envs, n_ent, 2)),
            comm=np.zeros((n_envs, sc.n_agents, sc.dim_c)),
            goal=np.zeros((n_envs, sc.n_goals), dtype=np.int64),
        )
        self._opp_noise = np.full((n_envs, len(spec.opponents), self.episode_limit), -1)
        self._actions = np.zeros((n_envs, sc.n_agents), dtype=np.int64)  # (B, A)
        self._t = 0
        self._done = np.zeros(n_envs, dtype=bool)
        self._layout = entity_layout(spec) if spec.has_subtasks else None

    def _timestep(self, agent_rewards: np.ndarray, trunc: np.ndarray) -> TimeStep:
        obs = self.scenario.team_obs(self.world)  # (B, N, O) float32
        if obs.shape[2] < self.obs_dim:  # pragma: no cover - every scenario pads itself
            raise RuntimeError("scenario returned unpadded observations")
        reward = agent_rewards.sum(axis=1).astype(np.float32)
        info: dict[str, np.ndarray] = {"agent_rewards": agent_rewards}
        if self._layout is not None:  # the entity view (SPEC §3.8)
            w = self.world
            goal = w.goal[:, 0] if w.goal.shape[1] else np.zeros(self.n_envs, dtype=np.int64)
            info.update(entity_view(self._layout, w.pos, w.vel, goal,
                                    reward if self._t > 0 else None))
        return TimeStep(
            obs=obs,
            state=obs.reshape(self.n_envs, -1).copy(),
            avail_actions=np.broadcast_to(self._avail, (self.n_envs, *self._avail.shape)).copy(),
            reward=reward,
            terminated=np.zeros(self.n_envs, dtype=bool),
            truncated=trunc,
            info=info,
        )

    def reset(self, seeds: Sequence[int] | None = None) -> TimeStep:
        """Reset every row; ``seeds`` (len B) fix the episodes, else drawn from the seed stream."""
        if seeds is None:
            seeds = [int(s) for s in self._seed_rng.integers(0, 2**31 - 1, size=self.n_envs)]
        if len(seeds) != self.n_envs:
            raise ValueError(f"reset needs {self.n_envs} seeds, got {len(seeds)}")
        w, sc = self.world, self.scenario
        w.vel[:] = 0.0
        w.comm[:] = 0.0
        for b, s in enumerate(seeds):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(s))))
            w.pos[b], w.goal[b] = sc.draw(rng)
            streams = episode_streams(int(s), len(self.spec.opponents))
            for k, opp_rng in enumerate(streams):
                self._opp_noise[b, k] = opponent_noise(
                    opp_rng, self.episode_limit, self.spec.opponent_eps, self._opp_actions[k]
                )
        self._done[:] = False
        self._t = 0
        zeros = np.zeros((self.n_envs, self.n_agents), dtype=np.float32)
        return self._timestep(zeros, np.zeros(self.n_envs, dtype=bool))

    def step(self, actions: np.ndarray) -> TimeStep:
        """Step every row with ``actions`` (B, N); see :class:`BatchedTask`."""
        actions = np.asarray(actions)
        if actions.shape != (self.n_envs, self.n_agents):
            raise ValueError(f"actions must be {(self.n_envs, self.n_agents)}, got {actions.shape}")
        if self._done.any():
            raise RuntimeError("step() called on a row whose episode has ended; reset() first")
        bad = (actions < 0) | (actions >= self._team_limits)
        if bad.any():
            b, i = np.argwhere(bad)[0]
            raise ValueError(f"action {actions[b, i]} unavailable for {self.team[i]} (row {b})")
        sc = self.scenario
        self._actions[:, sc.team_idx] = actions
        if len(sc.opp_idx):
            noise = self._opp_noise[:, :, self._t]  # (B, K)
            self._actions[:, sc.opp_idx] = sc.opponent_actions(self.world, noise)
        self.physics.step(self.world, self._actions)
        self._t += 1
        rewards = sc.team_rewards(self.world).astype(np.float32)  # (B, N)
        trunc = np.full(self.n_envs, self._t >= self.episode_limit)
        self._done = trunc.copy()
        return self._timestep(rewards, trunc)

    def close(self) -> None:
        """Nothing to release."""
