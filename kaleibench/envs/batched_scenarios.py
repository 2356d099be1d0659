"""Vectorised MPE scenarios for the numpy backend, with mpe2 1.1.1 semantics.

A scenario describes its entities the way mpe2's ``world.entities`` lists them (agents first,
then landmarks), draws one row's initial state from that episode's generator in mpe2's draw order,
and computes, for all ``B`` rows at once, the controlled team's observations and rewards and the
scripted opponents' actions. Positions are float64 like mpe2; observations are built in float64
and cast to float32 as mpe2's ``observe`` does, so both backends agree bit for bit in the usual
case. Shapes: B rows, A agents, E = A + landmarks entities, N team agents, K opponents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kaleibench.envs.base import TaskSpec
from kaleibench.envs.batched_scripted import adversary_goal_guess_batch, prey_flee_batch


@dataclass
class WorldState:
    """The physical and communication state of ``B`` worlds."""

    pos: np.ndarray  # (B, E, 2) float64 positions
    vel: np.ndarray  # (B, E, 2) float64 velocities
    comm: np.ndarray  # (B, A, C) float64 communication state (zeros for silent agents)
    goal: np.ndarray  # (B, G) int64 scenario goal landmark indices (0-based among landmarks)


def relative(pos: np.ndarray, viewers: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Target positions relative to each viewer, flattened per viewer.

    Args:
        pos: (B, E, 2) entity positions.
        viewers: (V,) entity indices of the viewers.
        targets: (V, T) entity indices seen by each viewer, in observation order.

    Returns:
        (B, V, 2T) float64: ``pos[targets[v]] - pos[viewers[v]]``.
    """
    rel = pos[:, targets] - pos[:, viewers, None]  # (B, V, T, 2)
    return rel.reshape(pos.shape[0], len(viewers), -1)


def distance(delta: np.ndarray) -> np.ndarray:
    """Euclidean length over the last axis (size 2), as ``np.sqrt(np.sum(np.square(d)))``."""
    return np.sqrt(delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1])


def others(n: int, offset: int = 0) -> np.ndarray:
    """(n, n-1) indices ``offset + j`` for j != i, in order: "every other agent" per agent i."""
    return np.array([[offset + j for j in range(n) if j != i] for i in range(n)], dtype=np.int64)


class Scenario:
    """Static entity layout plus the per-scenario hooks; subclasses fill both in ``__init__``."""

    agent_names: tuple[str, ...]
    n_landmarks: int
    dim_c: int
    n_goals: int = 0
    size: np.ndarray  # (E,) radii
    collide: np.ndarray  # (E,) bool
    movable: np.ndarray  # (A,) bool
    silent: np.ndarray  # (A,) bool
    accel: np.ndarray  # (A,) action sensitivity (mpe2: 5.0 unless agent.accel is set)
    max_speed: np.ndarray  # (A,) inf where mpe2 has None
    obs_sizes: tuple[int, ...]  # per team agent

    def __init__(self, spec: TaskSpec) -> None:
        raise NotImplementedError  # each scenario reads its pinned kwargs from ``spec``

    def _layout(self, spec: TaskSpec, names: list[str], n_landmarks: int, dim_c: int) -> None:
        """Set the defaults of mpe2's Entity/Agent classes for ``names`` + ``n_landmarks``."""
        self.agent_names = tuple(names)
        self.n_landmarks = n_landmarks
        self.dim_c = dim_c
        n_agents, n_ent = len(names), len(names) + n_landmarks
        self.size = np.full(n_ent, 0.05)
        self.collide = np.zeros(n_ent, dtype=bool)
        self.movable = np.ones(n_agents, dtype=bool)
        self.silent = np.zeros(n_agents, dtype=bool)
        self.accel = np.full(n_agents, 5.0)
        self.max_speed = np.full(n_agents, np.inf)
        index = {name: i for i, name in enumerate(names)}
        self.team_idx = np.array([index[a] for a in spec.team], dtype=np.int64)  # (N,)
        self.opp_idx = np.array([index[o] for o, _ in spec.opponents], dtype=np.int64)  # (K,)

    @property
    def n_agents(self) -> int:
        """Number of mpe2 agents A (team and opponents)."""
        return len(self.agent_names)

    @property
    def n_actions(self) -> np.ndarray:
        """(A,) discrete action counts, as mpe2's SimpleEnv derives them."""
        base = np.where(self.movable, 5, 1)
        return np.where(self.silent, base, base * self.dim_c)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One row's initial positions (E, 2) and goals (G,), drawn as mpe2's reset_world does."""
        raise NotImplementedError

    def team_obs(self, w: WorldState) -> np.ndarray:
        """(B, N, O) float32 team observations, zero-padded to the longest."""
        raise NotImplementedError

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """(B, N) float64 team rewards after a step (local_ratio mixing included)."""
        raise NotImplementedError

    def opponent_actions(self, w: WorldState, noise: np.ndarray) -> np.ndarray:
        """(B, K) scripted opponent actions; ``noise`` (B, K) overrides the rule where >= 0."""
        return noise.astype(np.int64)


def _uniform(rng: np.random.Generator, n: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """``n`` successive ``rng.uniform(low, high, 2)`` draws as one (n, 2) array (same stream)."""
    return rng.uniform(low, high, (n, 2))


class Spread(Scenario):
    """mpe2 ``simple_spread``: N agents (size 0.15, colliding, silent), N landmarks."""

    def __init__(self, spec: TaskSpec) -> None:
        kw = dict(spec.kwargs)
        n = int(kw["N"])
        self.local_ratio = float(kw["local_ratio"])
        self._layout(spec, [f"agent_{i}" for i in range(n)], n, dim_c=2)
        self.size[:n] = 0.15
        self.collide[:n] = True
        self.silent[:] = True
        self.obs_sizes = (4 + 2 * n + 4 * (n - 1),) * len(spec.team)
        self._others = others(n)  # (n, n-1)
        self._landmarks = np.broadcast_to(np.arange(n, 2 * n), (n, n))  # (n, L)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Agents then landmarks, each uniform(-1, 1)."""
        return _uniform(rng, 2 * self.n_agents), np.zeros(0, dtype=np.int64)

    def team_obs(self, w: WorldState) -> np.ndarray:
        """[vel, pos, landmarks rel, other agents rel, other agents' comm] per agent."""
        ag = self.team_idx
        comm = w.comm[:, self._others[ag]].reshape(w.pos.shape[0], len(ag), -1)  # (B, N, ..)
        parts = [
            w.vel[:, ag], w.pos[:, ag],
            relative(w.pos, ag, self._landmarks[ag]), relative(w.pos, ag, self._others[ag]),
            comm,
        ]
        return np.concatenate(parts, axis=2).astype(np.float32)

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """0.5 · (−Σ_landmarks min_agents dist) + 0.5 · (−collisions), with local_ratio."""
        n = self.n_agents
        agents = w.pos[:, :n]  # (B, n, 2)
        to_lm = distance(agents[:, :, None] - w.pos[:, None, n:])  # (B, n, L)
        nearest = to_lm.min(axis=1)  # (B, L)
        glob = np.zeros(w.pos.shape[0])
        for lm in range(self.n_landmarks):
            glob = glob - nearest[:, lm]
        pair = distance(agents[:, :, None] - agents[:, None])  # (B, n, n)
        hit = (pair < self.size[:n, None] + self.size[None, :n]) & ~np.eye(n, dtype=bool)
        local = -hit.sum(axis=1).astype(np.float64)  # (B, n)
        rew = glob[:, None] * (1 - self.local_ratio) + local * self.local_ratio
        return rew[:, self.team_idx]


_SL_COLOURS = np.array([[0.65, 0.15, 0.15], [0.15, 0.65, 0.15], [0.15, 0.15, 0.65]])
_REF_COLOURS = np.array([[0.75, 0.25, 0.25], [0.25, 0.75, 0.25], [0.25, 0.25, 0.75]])


class SpeakerListener(Scenario):
    """mpe2 ``simple_speaker_listener``: static speaker (says 1 of 3), silent listener."""

    def __init__(self, spec: TaskSpec) -> None:
        self._layout(spec, ["speaker_0", "listener_0"], 3, dim_c=3)
        self.n_goals = 1
        self.size[:2] = 0.075
        self.size[2:] = 0.04
        self.movable[0] = False
        self.silent[1] = True
        sizes = {"speaker_0": 3, "listener_0": 11}
        self.obs_sizes = tuple(sizes[a] for a in spec.team)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Goal landmark index, then agents and landmarks uniform(-1, 1)."""
        goal = int(rng.integers(3))
        return _uniform(rng, 5), np.array([goal], dtype=np.int64)

    def team_obs(self, w: WorldState) -> np.ndarray:
        """Speaker: goal colour (3). Listener: vel, landmarks rel, speaker's message (11)."""
        n_rows = w.pos.shape[0]
        full = np.zeros((n_rows, 2, 11))
        full[:, 0, :3] = _SL_COLOURS[w.goal[:, 0]]
        listener = np.ones(1, dtype=np.int64)
        full[:, 1, :2] = w.vel[:, 1]
        full[:, 1, 2:8] = relative(w.pos, listener, np.array([[2, 3, 4]]))[:, 0]
        full[:, 1, 8:] = w.comm[:, 0]
        return full[:, self.team_idx].astype(np.float32)

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """Both agents: −‖listener − goal landmark‖²."""
        goal = w.pos[np.arange(w.pos.shape[0]), 2 + w.goal[:, 0]]  # (B, 2)
        d = w.pos[:, 1] - goal
        rew = -(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])  # (B,)
        return np.repeat(rew[:, None], len(self.team_idx), axis=1)


class Reference(Scenario):
    """mpe2 ``simple_reference``: two talking movers (Discrete(50)), 3 landmarks."""

    def __init__(self, spec: TaskSpec) -> None:
        self.local_ratio = float(dict(spec.kwargs)["local_ratio"])
        self._layout(spec, ["agent_0", "agent_1"], 3, dim_c=10)
        self.n_goals = 2
        self.obs_sizes = (21,) * len(spec.team)
        self._landmarks = np.array([[2, 3, 4], [2, 3, 4]])

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Both agents' goal landmarks, then agents and landmarks uniform(-1, 1)."""
        goals = [int(rng.integers(3)), int(rng.integers(3))]
        return _uniform(rng, 5), np.array(goals, dtype=np.int64)

    def team_obs(self, w: WorldState) -> np.ndarray:
        """[vel, landmarks rel, own goal landmark's colour, the other agent's message] (21)."""
        ag = self.team_idx
        parts = [
            w.vel[:, ag], relative(w.pos, ag, self._landmarks[ag]),
            _REF_COLOURS[w.goal[:, ag]], w.comm[:, 1 - ag],
        ]
        return np.concatenate(parts, axis=2).astype(np.float32)

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """Agent i: −dist(partner, i's goal landmark), mixed with the mean by local_ratio."""
        rows = np.arange(w.pos.shape[0])[:, None]
        goal = w.pos[rows, 2 + w.goal]  # (B, 2, 2) goal landmark of agent 0 and agent 1
        own = -distance(w.pos[:, [1, 0]] - goal)  # (B, 2)
        glob = (own[:, 0] + own[:, 1]) / 2
        rew = glob[:, None] * (1 - self.local_ratio) + own * self.local_ratio
        return rew[:, self.team_idx]


class Adversary(Scenario):
    """mpe2 ``simple_adversary``: 1 adversary + N good agents (size 0.15, silent), N landmarks."""

    def __init__(self, spec: TaskSpec) -> None:
        n = int(dict(spec.kwargs)["N"])
        names = ["adversary_0", *(f"agent_{i}" for i in range(n))]
        self._layout(spec, names, n, dim_c=2)
        self.n_goals = 1
        self.size[: n + 1] = 0.15
        self.size[n + 1 :] = 0.08
        self.silent[:] = True
        self.obs_sizes = (2 + 4 * n,) * len(spec.team)
        self._others = others(n + 1)  # (A, A-1)
        self._landmarks = np.broadcast_to(np.arange(n + 1, 2 * n + 1), (n + 1, n))

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Goal landmark, then agents and landmarks uniform(-1, 1)."""
        goal = int(rng.integers(self.n_landmarks))
        return _uniform(rng, self.n_agents + self.n_landmarks), np.array([goal], dtype=np.int64)

    def _goal_pos(self, w: WorldState) -> np.ndarray:
        return w.pos[np.arange(w.pos.shape[0]), self.n_agents + w.goal[:, 0]]  # (B, 2)

    def team_obs(self, w: WorldState) -> np.ndarray:
        """Good agents: [goal rel, landmarks rel, other agents rel]; the adversary: no goal."""
        ag = self.team_idx
        if np.any(ag == 0):
            raise NotImplementedError("the adversary is scripted in every pinned task")
        goal_rel = self._goal_pos(w)[:, None] - w.pos[:, ag]  # (B, N, 2)
        parts = [goal_rel, relative(w.pos, ag, self._landmarks[ag]),
                 relative(w.pos, ag, self._others[ag])]
        return np.concatenate(parts, axis=2).astype(np.float32)

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """Good agents: dist(adversary, goal) − min_good dist(good, goal)."""
        goal = self._goal_pos(w)[:, None]  # (B, 1, 2)
        to_goal = distance(w.pos[:, : self.n_agents] - goal)  # (B, A)
        rew = -to_goal[:, 1:].min(axis=1) + to_goal[:, 0]  # (B,)
        return np.repeat(rew[:, None], len(self.team_idx), axis=1)

    def opponent_actions(self, w: WorldState, noise: np.ndarray) -> np.ndarray:
        """``adversary-goal-guess`` on the adversary's float32 observation pieces."""
        adv = np.zeros(1, dtype=np.int64)
        lm = relative(w.pos, adv, self._landmarks[:1])[:, 0].astype(np.float32)
        good = relative(w.pos, adv, self._others[:1])[:, 0].astype(np.float32)
        n_rows = w.pos.shape[0]
        rule = adversary_goal_guess_batch(lm.reshape(n_rows, -1, 2), good.reshape(n_rows, -1, 2))
        return np.where(noise[:, 0] >= 0, noise[:, 0], rule)[:, None].astype(np.int64)


class Tag(Scenario):
    """mpe2 ``simple_tag``: P predators, G prey, O static obstacles (size 0.2), all colliding."""

    def __init__(self, spec: TaskSpec) -> None:
        kw = dict(spec.kwargs)
        p, g, o = int(kw["num_adversaries"]), int(kw["num_good"]), int(kw["num_obstacles"])
        self.n_pred, self.n_prey = p, g
        names = [*(f"adversary_{i}" for i in range(p)), *(f"agent_{i}" for i in range(g))]
        self._layout(spec, names, o, dim_c=2)
        self.size[:p], self.size[p : p + g], self.size[p + g :] = 0.075, 0.05, 0.2
        self.collide[:] = True
        self.silent[:] = True
        self.accel[:p], self.accel[p:] = 3.0, 4.0
        self.max_speed[:p], self.max_speed[p:] = 1.0, 1.3
        a = p + g
        self._others = others(a)  # (A, A-1)
        self._obstacles = np.broadcast_to(np.arange(a, a + o), (a, o))
        self.obs_sizes = (4 + 2 * o + 2 * (a - 1) + 2 * g,) * len(spec.team)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Agents uniform(-1, 1), then obstacles uniform(-0.9, 0.9)."""
        agents = _uniform(rng, self.n_agents)
        obstacles = _uniform(rng, self.n_landmarks, -0.9, 0.9)
        return np.concatenate([agents, obstacles]), np.zeros(0, dtype=np.int64)

    def team_obs(self, w: WorldState) -> np.ndarray:
        """[vel, pos, obstacles rel, other agents rel, other prey's velocities] per predator."""
        ag = self.team_idx
        if np.any(ag >= self.n_pred):
            raise NotImplementedError("prey are scripted in every pinned task")
        prey_vel = w.vel[:, self.n_pred : self.n_agents].reshape(w.pos.shape[0], 1, -1)
        parts = [
            w.vel[:, ag], w.pos[:, ag],
            relative(w.pos, ag, self._obstacles[ag]), relative(w.pos, ag, self._others[ag]),
            np.broadcast_to(prey_vel, (w.pos.shape[0], len(ag), prey_vel.shape[2])),
        ]
        return np.concatenate(parts, axis=2).astype(np.float32)

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """Every predator: +10 per colliding (prey, predator) pair."""
        p, a = self.n_pred, self.n_agents
        gap = distance(w.pos[:, p:a, None] - w.pos[:, None, :p])  # (B, G, P)
        hits = (gap < self.size[p:a, None] + self.size[None, :p]).sum(axis=(1, 2))  # (B,)
        return np.repeat(10.0 * hits[:, None], len(self.team_idx), axis=1)

    def opponent_actions(self, w: WorldState, noise: np.ndarray) -> np.ndarray:
        """``prey-flee`` for every scripted prey, on its float32 observation pieces."""
        acts = np.empty(noise.shape, dtype=np.int64)
        for k, prey in enumerate(self.opp_idx):
            pos = w.pos[:, prey].astype(np.float32)  # (B, 2)
            preds = (w.pos[:, : self.n_pred] - w.pos[:, prey, None]).astype(np.float32)
            rule = prey_flee_batch(pos, preds)
            acts[:, k] = np.where(noise[:, k] >= 0, noise[:, k], rule)
        return acts


SCENARIOS: dict[str, type[Scenario]] = {
    "simple_spread_v3": Spread,
    "simple_speaker_listener_v4": SpeakerListener,
    "simple_reference_v3": Reference,
    "simple_adversary_v3": Adversary,
    "simple_tag_v3": Tag,
}
