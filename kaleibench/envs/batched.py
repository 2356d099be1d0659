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
from kaleibench.envs.sight import observe, sight_layout

DT = 0.1
DAMPING = 0.25
CONTACT_FORCE = 1e2
CONTACT_MARGIN = 1e-3
_MOVES = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])  # (5, 2)


class Physics:
    """mpe2's ``World.step`` for one scenario's entity layout, over ``B`` rows at once."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        colliders = np.flatnonzero(sc.collide)  # (C,) entity indices, agents first
        n_col = len(colliders)
        pair_i, pair_j = np.triu_indices(n_col, k=1)  # (P,) unordered colliding pairs, i < j
        self.colliders = colliders
        self.pairs = (pair_i, pair_j)
        size = sc.size[colliders]
        self.dist_min = (size[pair_i] + size[pair_j])[:, None]  # (P, 1)
        pair_of = {(int(i), int(j)): k for k, (i, j) in enumerate(zip(pair_i, pair_j, strict=True))}
        # per colliding agent: (entity, [(pair, +1 if it is the pair's first entity)...]) with the
        # partners in entity order, which is the order mpe2's pair loop adds their forces in
        self.partners = [
            (int(colliders[c]), [(pair_of[min(c, o), max(c, o)], c < o) for o in range(n_col)
                                 if o != c])
            for c in range(n_col) if colliders[c] < sc.n_agents
        ]
        self.movable = np.flatnonzero(sc.movable)  # (M,) agent (= entity) indices
        self.talkers = np.flatnonzero(~sc.silent)  # (T,)
        self.max_speed = sc.max_speed[self.movable][:, None]  # (M, 1)
        self.accel = sc.accel[:, None, None]  # (A, 1, 1)
        self.moves = np.ascontiguousarray(_MOVES.T)  # (2, 5)

    def contact_forces(self, pos: np.ndarray, force: np.ndarray) -> None:
        """Add the soft contact forces between colliding entities to ``force`` (A, 2, B)."""
        if not self.partners or len(self.colliders) < 2:
            return
        p = pos[self.colliders]  # (C, 2, B)
        delta = p[self.pairs[0]] - p[self.pairs[1]]  # (P, 2, B): first minus second entity
        dx, dy = delta[:, 0], delta[:, 1]
        dist = np.sqrt(dx * dx + dy * dy)  # (P, B)
        arg = -(dist - self.dist_min) / CONTACT_MARGIN  # (P, B)
        # logaddexp(0, x) is exactly 0.0 below x = -745 (exp underflows): skip those pairs
        soft = np.zeros_like(arg)
        np.logaddexp(0.0, arg, out=soft, where=arg > -750.0)
        penetration = soft * CONTACT_MARGIN
        f = CONTACT_FORCE * delta / dist[:, None] * penetration[:, None]  # (P, 2, B)
        for entity, partners in self.partners:
            acc = force[entity]  # (2, B)
            for pair, first in partners:
                acc = acc + f[pair] if first else acc - f[pair]  # a - f == (-f) + a exactly
            force[entity] = acc

    def step(self, w: WorldState, actions: np.ndarray) -> None:
        """Advance ``w`` in place by one step of mpe2 physics.

        Args:
            w: the B worlds.
            actions: (A, B) int discrete actions of every mpe2 agent (team and opponents).
        """
        sc = self.sc
        move = np.where(sc.movable[:, None], actions % 5, 0)  # (A, B)
        force = np.swapaxes(self.moves[:, move], 0, 1) * self.accel  # (A, 2, B): u · sensitivity
        self.contact_forces(w.pos, force)
        mv = self.movable
        vel = w.vel[mv]  # (M, 2, B)
        w.pos[mv] = w.pos[mv] + vel * DT
        vel = vel * (1 - DAMPING)
        vel = vel + force[mv] * DT  # every mass is 1.0 in these scenarios (force / 1.0 exact)
        speed = np.sqrt(vel[:, 0] * vel[:, 0] + vel[:, 1] * vel[:, 1])  # (M, B)
        over = speed > self.max_speed
        if over.any():
            denom = np.where(over, speed, 1.0)[:, None]
            vel = np.where(over[:, None], vel / denom * self.max_speed[:, :, None], vel)
        w.vel[mv] = vel
        if len(self.talkers):
            t = self.talkers
            msg = np.where(sc.movable[t][:, None], actions[t] // 5, actions[t])  # (T, B)
            one_hot = np.arange(sc.dim_c)[None, :, None] == msg[:, None, :]  # (T, C, B)
            w.comm[t] = one_hot.astype(np.float64)  # as mpe2's one-hot action.c


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
        self._sight = sight_layout(spec)
        extra = self._sight.n_slots if self._sight is not None else 0
        self.obs_sizes = [s + extra for s in sc.obs_sizes]
        self.action_sizes = [int(n) for n in sc.n_actions[sc.team_idx]]
        self.obs_dim = max(self.obs_sizes)
        self.n_actions = max(self.action_sizes)
        self.state_dim = self.n_agents * max(sc.obs_sizes)  # the unmasked observations
        self.episode_limit = spec.max_cycles
        self._team_limits = np.array(self.action_sizes)  # (N,)
        self._opp_actions = [int(sc.n_actions[k]) for k in sc.opp_idx]
        self._avail = np.arange(self.n_actions)[None, :] < self._team_limits[:, None]  # (N, A)
        self._seed_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE5]))
        n_ent = sc.n_agents + sc.n_landmarks
        self.world = WorldState(
            pos=np.zeros((n_ent, 2, n_envs)),
            vel=np.zeros((n_ent, 2, n_envs)),
            comm=np.zeros((sc.n_agents, sc.dim_c, n_envs)),
            goal=np.zeros((sc.n_goals, n_envs), dtype=np.int64),
        )
        self._opp_noise = np.full((n_envs, len(spec.opponents), self.episode_limit), -1)
        self._actions = np.zeros((sc.n_agents, n_envs), dtype=np.int64)  # (A, B)
        self._t = 0
        self._done = np.zeros(n_envs, dtype=bool)
        self._layout = entity_layout(spec) if spec.has_subtasks else None
        self.entity_view = self._layout is not None
        """Whether time steps carry the entity view in ``info`` (tasks with subtasks only). A
        learner that never reads it (the QMIX family) may switch it off: nothing else changes."""

    def _timestep(self, agent_rewards: np.ndarray, trunc: np.ndarray) -> TimeStep:
        full = self.scenario.team_obs(self.world)  # (B, N, O) float32
        if full.shape[2] * self.n_agents < self.state_dim:  # pragma: no cover - scenarios pad
            raise RuntimeError("scenario returned unpadded observations")
        w = self.world
        pos = w.pos.transpose(2, 0, 1)  # (B, E, 2) view
        obs = full if self._sight is None else observe(self._sight, full, pos)
        reward = agent_rewards.sum(axis=1).astype(np.float32)
        info: dict[str, np.ndarray] = {"agent_rewards": agent_rewards}
        if self._layout is not None and self.entity_view:  # the entity view (subtasks)
            goal = w.goal[0] if w.goal.shape[0] else np.zeros(self.n_envs, dtype=np.int64)
            vel = w.vel.transpose(2, 0, 1)  # (B, E, 2) view
            info.update(entity_view(self._layout, pos, vel, goal, reward if self._t > 0 else None,
                                    self.spec.sight_radius))
        return TimeStep(
            obs=obs,
            state=full.reshape(self.n_envs, -1).copy(),
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
        draws = [sc.draw(np.random.Generator(np.random.PCG64(int(s)))) for s in seeds]
        w.pos[:] = np.stack([pos for pos, _ in draws], axis=2)  # (E, 2, B)
        if sc.n_goals:
            w.goal[:] = np.stack([goal for _, goal in draws], axis=1)  # (G, B)
        for b, s in enumerate(seeds if self.spec.opponents else ()):
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
        self._actions[sc.team_idx] = actions.T
        if len(sc.opp_idx):
            noise = self._opp_noise[:, :, self._t]  # (B, K)
            self._actions[sc.opp_idx] = sc.opponent_actions(self.world, noise).T
        self.physics.step(self.world, self._actions)
        self._t += 1
        rewards = np.ascontiguousarray(sc.team_rewards(self.world).T, dtype=np.float32)  # (B, N)
        trunc = np.full(self.n_envs, self._t >= self.episode_limit)
        self._done = trunc.copy()
        return self._timestep(rewards, trunc)

    def close(self) -> None:
        """Nothing to release."""
