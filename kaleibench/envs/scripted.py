"""Scripted policies: the opponents that are part of a task, and the team heuristics.

Opponents are functions of the opponent's own mpe2 observation and a per-row generator, so the
same rule runs in every backend. Team heuristics read the whole team's observations (they are
reference policies, not decentralised agents) and return one action per controlled agent.

Discrete MPE moves: 0 no-op, 1 -x, 2 +x, 3 -y, 4 +y.
"""

from __future__ import annotations

import numpy as np

from kaleibench.envs.base import TaskSpec
from kaleibench.envs.sight import sight_layout, split

_MOVES = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])  # actions 1..4
_VEL_GAIN = 0.5  # damping term of the PD steering rule: aim at (rel_pos - gain * own velocity)


def steer(direction: np.ndarray, deadzone: float = 0.02) -> int:
    """Discrete move whose direction best matches ``direction`` (2,); no-op inside the deadzone.

    Examples:
        >>> steer(np.array([0.0, 0.5])), steer(np.array([-1.0, 0.2])), steer(np.zeros(2))
        (4, 1, 0)
    """
    if float(np.hypot(direction[0], direction[1])) < deadzone:
        return 0
    return int(np.argmax(_MOVES @ direction)) + 1


def _pairs(flat: np.ndarray) -> np.ndarray:
    return flat.reshape(-1, 2)


# --------------------------------------------------------------------------------- opponents
def prey_flee(obs: np.ndarray, n_obstacles: int, n_predators: int) -> int:
    """Prey rule: run from the predators (inverse-square weighted), pushed back from the walls.

    Prey observation (mpe2 simple_tag): [vel 2, pos 2, obstacles 2·L, others 2·(n-1), prey vel].
    The other agents are listed predators first.
    """
    pos = obs[2:4]
    start = 4 + 2 * n_obstacles
    predators = _pairs(obs[start : start + 2 * n_predators])  # (n_pred, 2) relative
    dist2 = np.maximum((predators**2).sum(axis=1, keepdims=True), 1e-4)
    away = -(predators / dist2).sum(axis=0)
    wall = -np.sign(pos) * np.maximum(np.abs(pos) - 0.7, 0.0) * 20.0
    return steer(away + wall, deadzone=1e-6)


def adversary_to_goal_guess(obs: np.ndarray, n_landmarks: int) -> int:
    """Adversary rule: go to the landmark that the good agents are nearest to.

    Adversary observation (mpe2 simple_adversary): [landmarks 2·L, good agents 2·G], relative.
    """
    landmarks = _pairs(obs[: 2 * n_landmarks])  # (L, 2)
    good = _pairs(obs[2 * n_landmarks :])  # (G, 2)
    dist = np.linalg.norm(landmarks[:, None, :] - good[None, :, :], axis=-1)  # (L, G)
    target = landmarks[int(np.argmin(dist.min(axis=1)))]
    return steer(target, deadzone=0.05)


OPPONENTS = {"prey-flee": prey_flee, "adversary-goal-guess": adversary_to_goal_guess}


def opponent_noise(
    rng: np.random.Generator, episode_limit: int, eps: float, n_actions: int
) -> np.ndarray:
    """One episode's exploration plan for one scripted opponent, drawn at reset.

    Returns (T,) int: ``-1`` where the rule acts, else the random action taken at that step.
    Drawing the whole plan at reset (two vector draws) keeps every backend on the same stream.
    """
    explore = rng.random(episode_limit) < eps
    random_actions = rng.integers(n_actions, size=episode_limit)
    return np.where(explore, random_actions, -1)


def opponent_action(name: str, obs: np.ndarray, spec: TaskSpec, noise: int) -> int:
    """One scripted opponent action: ``noise`` if it is a planned random move, else the rule."""
    if noise >= 0:
        return int(noise)
    kwargs = dict(spec.kwargs)
    if name == "prey-flee":
        return prey_flee(obs, kwargs["num_obstacles"], kwargs["num_adversaries"])
    if name == "adversary-goal-guess":
        return adversary_to_goal_guess(obs, kwargs["N"])
    raise ValueError(f"unknown scripted opponent {name!r}; known: {sorted(OPPONENTS)}")


# ----------------------------------------------------------------------------- team heuristics
def _go_to(rel: np.ndarray, vel: np.ndarray) -> int:
    return steer(rel - _VEL_GAIN * vel)


def _greedy_assignment(dist: np.ndarray) -> np.ndarray:
    """Assign each row (agent) a distinct column (target), closest pairs first."""
    n_rows, n_cols = dist.shape
    assign = np.full(n_rows, -1)
    d = dist.astype(float).copy()
    for _ in range(min(n_rows, n_cols)):
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        assign[i] = j
        d[i, :] = np.inf
        d[:, j] = np.inf
    return assign


def spread_heuristic(obs: np.ndarray, n_agents: int) -> np.ndarray:
    """Greedy landmark assignment: closest agent-landmark pairs first, then steer there."""
    vel, pos = obs[:, 0:2], obs[:, 2:4]
    landmarks = obs[:, 4 : 4 + 2 * n_agents].reshape(n_agents, n_agents, 2)  # (N, L, 2) rel
    absolute = landmarks[0] + pos[0]  # (L, 2)
    dist = np.linalg.norm(pos[:, None, :] - absolute[None], axis=-1)  # (N, L)
    assign = _greedy_assignment(dist)
    return np.array([_go_to(landmarks[i, assign[i]], vel[i]) for i in range(n_agents)])


def tag_heuristic(obs: np.ndarray, n_predators: int, n_prey: int, n_obstacles: int) -> np.ndarray:
    """Chase: predators are spread over the prey (greedy), each steering at its prey."""
    vel = obs[:, 0:2]
    start = 4 + 2 * n_obstacles + 2 * (n_predators - 1)
    prey = obs[:, start : start + 2 * n_prey].reshape(n_predators, n_prey, 2)  # (N, P, 2) rel
    dist = np.linalg.norm(prey, axis=-1)  # (N, P)
    actions = []
    for i in range(n_predators):
        # every predator takes its nearest prey, except that with several prey the team splits
        target = int(np.argmin(dist[i])) if n_prey == 1 else i % n_prey
        actions.append(steer(prey[i, target] - 0.2 * vel[i], deadzone=1e-6))
    return np.array(actions)


def adversary_heuristic(obs: np.ndarray, n_good: int) -> np.ndarray:
    """Good agents cover both landmarks: the one nearest the goal takes it, the others decoys."""
    goal = obs[:, 0:2]  # (G, 2) rel
    landmarks = obs[:, 2 : 2 + 2 * n_good].reshape(n_good, n_good, 2)  # (G, L, 2) rel
    dist = np.linalg.norm(landmarks, axis=-1)  # (G, L)
    goal_idx = int(np.argmin(np.linalg.norm(landmarks[0] - goal[0], axis=-1)))
    dist_goal_first = dist.copy()
    dist_goal_first[:, goal_idx] -= 100.0  # the goal is assigned before any decoy
    assign = _greedy_assignment(dist_goal_first)
    return np.array([steer(landmarks[i, assign[i]], 0.05) for i in range(n_good)])


def speaker_listener_heuristic(obs: np.ndarray) -> np.ndarray:
    """Speaker names the goal colour; listener steers to the landmark named last step."""
    speaker_says = int(np.argmax(obs[0, :3]))
    vel, landmarks, heard = obs[1, 0:2], obs[1, 2:8].reshape(3, 2), obs[1, 8:11]
    move = _go_to(landmarks[int(np.argmax(heard))], vel) if heard.any() else 0
    return np.array([speaker_says, move])


def reference_heuristic(obs: np.ndarray) -> np.ndarray:
    """Each agent says the other's goal colour and steers to the landmark it was told."""
    actions = []
    for i in range(2):
        vel, landmarks = obs[i, 0:2], obs[i, 2:8].reshape(3, 2)
        goal_colour, heard = obs[i, 8:11], obs[i, 11:21]
        say = int(np.argmax(goal_colour)) if goal_colour.any() else 0
        move = _go_to(landmarks[int(np.argmax(heard[:3]))], vel) if heard.any() else 0
        actions.append(move + 5 * say)
    return np.array(actions)


def _lookout(i: int, n: int) -> np.ndarray:
    """Where agent ``i`` of ``n`` searches when the team sees nothing to go to: a ring of
    radius 0.5 around the arena's centre."""
    angle = 2 * np.pi * i / n
    return 0.5 * np.array([np.cos(angle), np.sin(angle)])


def spread_sight_heuristic(obs: np.ndarray, flags: np.ndarray, n_agents: int) -> np.ndarray:
    """Spread under a sight radius: the team pools what its agents see (own positions are
    always observed), assigns the *seen* landmarks greedily, and sends the others to search."""
    vel, pos = obs[:, 0:2], obs[:, 2:4]
    landmarks = obs[:, 4 : 4 + 2 * n_agents].reshape(n_agents, n_agents, 2)  # (N, L, 2) rel
    seen = flags[:, :n_agents]  # (N, L)
    known = np.flatnonzero(seen.any(axis=0))
    absolute = np.array([landmarks[int(np.argmax(seen[:, j])), j]
                         + pos[int(np.argmax(seen[:, j]))] for j in known]).reshape(-1, 2)
    dist = np.linalg.norm(pos[:, None, :] - absolute[None], axis=-1)  # (N, known)
    assign = _greedy_assignment(dist) if len(known) else np.full(n_agents, -1)
    targets = [absolute[assign[i]] if assign[i] >= 0 else _lookout(i, n_agents)
               for i in range(n_agents)]
    return np.array([_go_to(targets[i] - pos[i], vel[i]) for i in range(n_agents)])


def tag_sight_heuristic(obs: np.ndarray, flags: np.ndarray, n_predators: int, n_prey: int,
                        n_obstacles: int) -> np.ndarray:
    """Tag under a sight radius: prey positions are pooled over the predators that see them;
    each predator chases its prey (as ``tag-chase``) if seen, else the nearest seen prey, else
    it searches."""
    vel, pos = obs[:, 0:2], obs[:, 2:4]
    start = 4 + 2 * n_obstacles + 2 * (n_predators - 1)
    prey = obs[:, start : start + 2 * n_prey].reshape(n_predators, n_prey, 2)  # (N, G, 2) rel
    first = n_obstacles + n_predators - 1
    seen = flags[:, first : first + n_prey]  # (N, G)
    absolute = {g: prey[int(np.argmax(seen[:, g])), g] + pos[int(np.argmax(seen[:, g]))]
                for g in range(n_prey) if seen[:, g].any()}
    actions = []
    for i in range(n_predators):
        mine = i % n_prey
        if mine in absolute:
            target = absolute[mine]
        elif absolute:
            target = min(absolute.values(), key=lambda q: float(np.linalg.norm(q - pos[i])))
        else:
            target = _lookout(i, n_predators)
        actions.append(steer(target - pos[i] - 0.2 * vel[i], deadzone=1e-6))
    return np.array(actions)


def team_heuristic(spec: TaskSpec, obs: np.ndarray) -> np.ndarray:
    """Actions (N,) of the task's scripted team policy for one row's observations (N, O).

    With a sight radius the heuristic reads the same masked observations the agents get (pooled
    over the team: it is a reference policy, not a decentralised one).
    """
    kw = dict(spec.kwargs)
    layout = sight_layout(spec)
    if layout is not None:
        masked, flags = split(layout, obs)
        if spec.heuristic == "spread-greedy":
            return spread_sight_heuristic(masked, flags, kw["N"])
        if spec.heuristic == "tag-chase":
            return tag_sight_heuristic(masked, flags, kw["num_adversaries"], kw["num_good"],
                                       kw["num_obstacles"])
        raise ValueError(f"task {spec.id}: no sight-limited heuristic {spec.heuristic!r}")
    if spec.heuristic == "spread-greedy":
        return spread_heuristic(obs, kw["N"])
    if spec.heuristic == "tag-chase":
        return tag_heuristic(obs, kw["num_adversaries"], kw["num_good"], kw["num_obstacles"])
    if spec.heuristic == "adversary-cover":
        return adversary_heuristic(obs, kw["N"])
    if spec.heuristic == "speaker-listener-relay":
        return speaker_listener_heuristic(obs)
    if spec.heuristic == "reference-relay":
        return reference_heuristic(obs)
    raise ValueError(f"task {spec.id} has no scripted team heuristic {spec.heuristic!r}")
