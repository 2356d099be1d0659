"""Vectorised MPE scenarios for the numpy backend, with mpe2 1.1.1 semantics.

A scenario describes its entities the way mpe2's ``world.entities`` lists them (agents first,
then landmarks), draws one row's initial state from that episode's generator in mpe2's draw order,
and computes, for all ``B`` rows at once, the controlled team's observations and rewards and the
scripted opponents' actions. Positions are float64 like mpe2; observations are built in float64
and cast to float32 as mpe2's ``observe`` does, so both backends agree bit for bit in the usual
case. Rows are the *last* axis of every state array (entity-major layout: each operation works on
contiguous length-B vectors); the task transposes to (B, ...) once per step.
Shapes: B rows, A agents, E = A + landmarks entities, N team agents, K opponents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kaleibench.envs.base import TaskSpec
from kaleibench.envs.batched_scripted import adversary_goal_guess_batch, prey_flee_batch


@dataclass
class WorldState:
    """The physical and communication state of ``B`` worlds."""

    pos: np.ndarray  # (E, 2, B) float64 positions
    vel: np.ndarray  # (E, 2, B) float64 velocities
    comm: np.ndarray  # (A, C, B) float64 communication state (zeros for silent agents)
    goal: np.ndarray  # (G, B) int64 scenario goal landmark indices (0-based among landmarks)

    @property
    def rows(self) -> int:
        """Number of rows B."""
        return int(self.pos.shape[2])


def relative(pos: np.ndarray, viewers: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Target positions relative to each viewer, flattened per viewer.

    Args:
        pos: (E, 2, B) entity positions.
        viewers: (V,) entity indices of the viewers.
        targets: (V, T) entity indices seen by each viewer, in observation order.

    Returns:
        (V, 2T, B) float64: ``pos[targets[v]] - pos[viewers[v]]``, flattened as (T, 2).
    """
    rel = pos[targets] - pos[viewers][:, None]  # (V, T, 2, B)
    return rel.reshape(len(viewers), -1, pos.shape[2])


def distance(delta: np.ndarray) -> np.ndarray:
    """Euclidean length over axis -2 (size 2), as ``np.sqrt(np.sum(np.square(d)))``: (..., B)."""
    dx, dy = delta[..., 0, :], delta[..., 1, :]
    return np.sqrt(dx * dx + dy * dy)


def to_rows(obs: np.ndarray) -> np.ndarray:
    """(N, O, B) float64 observations -> (B, N, O) C-contiguous float32 (mpe2's cast)."""
    return np.ascontiguousarray(obs.transpose(2, 0, 1), dtype=np.float32)


def row_pick(arr: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``arr[index[..., b], :, b]`` per row b: (..., 2, B) from arr (E, 2, B), index (..., B)."""
    picked = arr[index, :, np.arange(arr.shape[2])]  # (..., B, 2)
    return np.swapaxes(picked, -1, -2)


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
        """(B, N, O) float32 team observations, zero-padded to the longest (use ``to_rows``)."""
        raise NotImplementedError

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """(N, B) float64 team rewards after a step (local_ratio mixing included)."""
        raise NotImplementedError

    def opponent_actions(self, w: WorldState, noise: np.ndarray) -> np.ndarray:
        """(B, K) scripted opponent actions; ``noise`` (B, K) overrides the rule where >= 0."""
        return noise.astype(np.int64)


def _uniform(rng: np.random.Generator, n: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """``n`` successive ``rng.uniform(low, high, 2)`` draws as one (n, 2) array.

    ``Generator.uniform`` computes ``low + (high - low) * next_double`` per element; spelling it
    out with ``rng.random`` gives the same numbers without ``uniform``'s per-call overhead.
    """
    return low + (high - low) * rng.random((n, 2))


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
        hit = self.size[:n, None] + self.size[None, :n]
        self._hit_dist = np.where(np.eye(n, dtype=bool), -np.inf, hit)[:, :, None]  # (n, n, 1)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Agents then landmarks, each uniform(-1, 1)."""
        return _uniform(rng, 2 * self.n_agents), np.zeros(0, dtype=np.int64)

    def team_obs(self, w: WorldState) -> np.ndarray:
        """[vel, pos, landmarks rel, other agents rel, other agents' comm] per agent."""
        ag = self.team_idx
        comm = w.comm[self._others[ag]].reshape(len(ag), -1, w.rows)  # (N, (n-1)C, B)
        parts = [
            w.vel[ag], w.pos[ag],
            relative(w.pos, ag, self._landmarks[ag]), relative(w.pos, ag, self._others[ag]),
            comm,
        ]
        return to_rows(np.concatenate(parts, axis=1))

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """0.5 · (−Σ_landmarks min_agents dist) + 0.5 · (−collisions), with local_ratio."""
        n = self.n_agents
        agents = w.pos[:n]  # (n, 2, B)
        to_lm = distance(agents[:, None] - w.pos[None, n:])  # (n, L, B)
        nearest = to_lm.min(axis=0)  # (L, B)
        glob = np.zeros(w.rows)
        for lm in range(self.n_landmarks):
            glob = glob - nearest[lm]
        pair = distance(agents[:, None] - agents[None])  # (n, n, B)
        hit = pair < self._hit_dist  # (n, n, B); the diagonal threshold is -inf
        local = -hit.sum(axis=0).astype(np.float64)  # (n, B)
        rew = glob[None] * (1 - self.local_ratio) + local * self.local_ratio
        return rew[self.team_idx]


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
        full = np.zeros((2, 11, w.rows))
        full[0, :3] = _SL_COLOURS[w.goal[0]].T
        listener = np.ones(1, dtype=np.int64)
        full[1, :2] = w.vel[1]
        full[1, 2:8] = relative(w.pos, listener, np.array([[2, 3, 4]]))[0]
        full[1, 8:] = w.comm[0]
        return to_rows(full[self.team_idx])

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """Both agents: −‖listener − goal landmark‖²."""
        d = w.pos[1] - row_pick(w.pos, 2 + w.goal[0])  # (2, B)
        rew = -(d[0] * d[0] + d[1] * d[1])  # (B,)
        return np.repeat(rew[None], len(self.team_idx), axis=0)


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
            w.vel[ag], relative(w.pos, ag, self._landmarks[ag]),
            np.swapaxes(_REF_COLOURS[w.goal[ag]], 1, 2), w.comm[1 - ag],
        ]
        return to_rows(np.concatenate(parts, axis=1))

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """Agent i: −dist(partner, i's goal landmark), mixed with the mean by local_ratio."""
        goal = row_pick(w.pos, 2 + w.goal)  # (2, 2, B) goal landmark of agent 0 and agent 1
        own = -distance(w.pos[[1, 0]] - goal)  # (2, B)
        glob = (own[0] + own[1]) / 2
        rew = glob[None] * (1 - self.local_ratio) + own * self.local_ratio
        return rew[self.team_idx]


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
        return row_pick(w.pos, self.n_agents + w.goal[0])  # (2, B)

    def team_obs(self, w: WorldState) -> np.ndarray:
        """Good agents: [goal rel, landmarks rel, other agents rel]; the adversary: no goal."""
        ag = self.team_idx
        if np.any(ag == 0):
            raise NotImplementedError("the adversary is scripted in every pinned task")
        goal_rel = self._goal_pos(w)[None] - w.pos[ag]  # (N, 2, B)
        parts = [goal_rel, relative(w.pos, ag, self._landmarks[ag]),
                 relative(w.pos, ag, self._others[ag])]
        return to_rows(np.concatenate(parts, axis=1))

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """Good agents: dist(adversary, goal) − min_good dist(good, goal)."""
        goal = self._goal_pos(w)[None]  # (1, 2, B)
        to_goal = distance(w.pos[: self.n_agents] - goal)  # (A, B)
        rew = -to_goal[1:].min(axis=0) + to_goal[0]  # (B,)
        return np.repeat(rew[None], len(self.team_idx), axis=0)

    def opponent_actions(self, w: WorldState, noise: np.ndarray) -> np.ndarray:
        """``adversary-goal-guess`` on the adversary's float32 observation pieces."""
        adv = np.zeros(1, dtype=np.int64)
        lm = relative(w.pos, adv, self._landmarks[:1])[0].T.astype(np.float32)  # (B, 2L)
        good = relative(w.pos, adv, self._others[:1])[0].T.astype(np.float32)  # (B, 2G)
        n_rows = w.rows
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
        prey_vel = w.vel[self.n_pred : self.n_agents].reshape(1, -1, w.rows)  # (1, 2G, B)
        parts = [
            w.vel[ag], w.pos[ag],
            relative(w.pos, ag, self._obstacles[ag]), relative(w.pos, ag, self._others[ag]),
            np.broadcast_to(prey_vel, (len(ag), *prey_vel.shape[1:])),
        ]
        return to_rows(np.concatenate(parts, axis=1))

    def team_rewards(self, w: WorldState) -> np.ndarray:
        """Every predator: +10 per colliding (prey, predator) pair."""
        p, a = self.n_pred, self.n_agents
        gap = distance(w.pos[p:a, None] - w.pos[None, :p])  # (G, P, B)
        hits = (gap < (self.size[p:a, None] + self.size[None, :p])[..., None]).sum(axis=(0, 1))
        return np.repeat(10.0 * hits[None], len(self.team_idx), axis=0)  # (N, B)

    def opponent_actions(self, w: WorldState, noise: np.ndarray) -> np.ndarray:
        """``prey-flee`` for every scripted prey, on its float32 observation pieces."""
        acts = np.empty(noise.shape, dtype=np.int64)
        for k, prey in enumerate(self.opp_idx):
            pos = w.pos[prey].T.astype(np.float32)  # (B, 2)
            preds = (w.pos[: self.n_pred] - w.pos[prey][None]).astype(np.float32)  # (P, 2, B)
            rule = prey_flee_batch(pos, np.ascontiguousarray(preds.transpose(2, 0, 1)))
            acts[:, k] = np.where(noise[:, k] >= 0, noise[:, k], rule)
        return acts


SCENARIOS: dict[str, type[Scenario]] = {
    "simple_spread_v3": Spread,
    "simple_speaker_listener_v4": SpeakerListener,
    "simple_reference_v3": Reference,
    "simple_adversary_v3": Adversary,
    "simple_tag_v3": Tag,
}
