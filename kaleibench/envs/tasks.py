"""The MPE task suite: one function per versioned task id, whose docstring is its spec sheet.

Every mpe2 kwarg is pinned here (mpe2==1.1.1). Changing a kwarg, the scripted opponent or the
state layout makes a new version suffix. Common to all tasks: discrete actions, 25-step episodes
that end by truncation (never termination), team reward = sum of the controlled agents' mpe2
rewards, state = concatenation of the team's zero-padded observations (EPyMARL convention).
The 25-step limit is part of every task (``time_limit_is_task``): the env reports it as
``truncated`` as mpe2 does, and learners treat it as terminal.
"""

from __future__ import annotations

from kaleibench.envs.base import TaskSpec

_COMMON = (("max_cycles", 25), ("continuous_actions", False))


def spread_v0() -> TaskSpec:
    """Cooperative navigation, 3 agents, 3 landmarks (mpe2 ``simple_spread_v3``).

    ## Observation
    Per agent (18): own velocity 2, own position 2, landmarks relative 6, other agents relative 4,
    other agents' (silent) communication 4.
    ## Actions
    Discrete(5): no-op, -x, +x, -y, +y.
    ## State
    54 = 3 × 18, concatenated observations.
    ## Reward
    Agent i: 0.5·(−Σ_landmarks min_agents dist) + 0.5·(−#collisions of i); team = Σ_i.
    ## Episode end
    Truncation after 25 steps; the limit is part of the task (terminal for learning).
    ## Subtasks
    Landmarks (3), for ALMA-style variants.
    ## Version history
    v0: mpe2 1.1.1, N=3, local_ratio=0.5.
    """
    return TaskSpec(
        id="mpe/spread-v0",
        time_limit_is_task=True,  # the score is the 25-step return: reaching 25 is terminal
        scenario="simple_spread_v3",
        kwargs=(("N", 3), ("local_ratio", 0.5), *_COMMON),
        team=("agent_0", "agent_1", "agent_2"),
        heuristic="spread-greedy",
        has_subtasks=True,
        summary="3 agents cover 3 landmarks, avoid collisions",
    )


def spread_n6_v0() -> TaskSpec:
    """Cooperative navigation, 6 agents, 6 landmarks (mpe2 ``simple_spread_v3``, N=6).

    ## Observation
    Per agent (36): velocity 2, position 2, landmarks 12, other agents 10, communication 10.
    ## Actions
    Discrete(5).
    ## State
    216 = 6 × 36.
    ## Reward
    As ``mpe/spread-v0`` with 6 agents; team = Σ_i.
    ## Episode end
    Truncation after 25 steps; the limit is part of the task (terminal for learning).
    ## Subtasks
    Landmarks (6).
    ## Version history
    v0: mpe2 1.1.1, N=6, local_ratio=0.5.
    """
    return TaskSpec(
        id="mpe/spread-n6-v0",
        time_limit_is_task=True,  # the score is the 25-step return: reaching 25 is terminal
        scenario="simple_spread_v3",
        kwargs=(("N", 6), ("local_ratio", 0.5), *_COMMON),
        team=tuple(f"agent_{i}" for i in range(6)),
        heuristic="spread-greedy",
        has_subtasks=True,
        summary="6 agents cover 6 landmarks, avoid collisions",
    )


def speaker_listener_v0() -> TaskSpec:
    """Speaker-listener (mpe2 ``simple_speaker_listener_v4``): a static speaker guides a listener.

    ## Observation
    Speaker (3): goal landmark colour. Listener (11): velocity 2, landmarks relative 6,
    speaker's message 3. Padded to 11.
    ## Actions
    Speaker Discrete(3) (message), listener Discrete(5) (move). Padded to 5; speaker's actions
    3 and 4 are unavailable (``avail_actions``).
    ## State
    22 = 2 × 11.
    ## Reward
    Both agents: −‖listener − goal‖²; team = 2 × that.
    ## Episode end
    Truncation after 25 steps; the limit is part of the task (terminal for learning).
    ## Subtasks
    None.
    ## Version history
    v0: mpe2 1.1.1.
    """
    return TaskSpec(
        id="mpe/speaker-listener-v0",
        time_limit_is_task=True,  # the score is the 25-step return: reaching 25 is terminal
        scenario="simple_speaker_listener_v4",
        kwargs=_COMMON,
        team=("speaker_0", "listener_0"),
        heuristic="speaker-listener-relay",
        summary="speaker tells listener which landmark to reach",
    )


def reference_v0() -> TaskSpec:
    """Reference (mpe2 ``simple_reference_v3``): two agents must tell each other their goals.

    ## Observation
    Per agent (21): velocity 2, landmarks relative 6, the *other* agent's goal colour 3,
    the other agent's message 10.
    ## Actions
    Discrete(50) = move (5) × message (10): ``a % 5`` moves, ``a // 5`` is the message.
    ## State
    42 = 2 × 21.
    ## Reward
    Agent i: 0.5·(−dist(partner, the landmark i knows)) + 0.5·(mean of both such terms);
    team = Σ_i = −(dist(agent_1, goal told by agent_0) + dist(agent_0, goal told by agent_1)).
    ## Episode end
    Truncation after 25 steps; the limit is part of the task (terminal for learning).
    ## Subtasks
    None.
    ## Version history
    v0: mpe2 1.1.1, local_ratio=0.5.
    """
    return TaskSpec(
        id="mpe/reference-v0",
        time_limit_is_task=True,  # the score is the 25-step return: reaching 25 is terminal
        scenario="simple_reference_v3",
        kwargs=(("local_ratio", 0.5), *_COMMON),
        team=("agent_0", "agent_1"),
        heuristic="reference-relay",
        summary="two agents exchange goal colours and reach their landmarks",
    )


def adversary_v0() -> TaskSpec:
    """Physical deception (mpe2 ``simple_adversary_v3``): 2 good agents vs a scripted adversary.

    ## Observation
    Per good agent (10): goal relative 2, landmarks relative 4, other agents relative 4.
    ## Actions
    Discrete(5).
    ## State
    20 = 2 × 10.
    ## Reward
    Good agent: dist(adversary, goal) − min_good dist(good, goal); team = Σ over the 2 good agents.
    ## Opponent
    ``adversary_0`` (scripted, ``adversary-goal-guess``): heads for the landmark nearest the good
    agents; with prob. 0.1 a uniformly random move, from a generator seeded by the episode seed.
    ## Episode end
    Truncation after 25 steps; the limit is part of the task (terminal for learning).
    ## Subtasks
    Landmarks (goal and decoy).
    ## Version history
    v0: mpe2 1.1.1, N=2, adversary-goal-guess ε=0.1.
    """
    return TaskSpec(
        id="mpe/adversary-v0",
        time_limit_is_task=True,  # the score is the 25-step return: reaching 25 is terminal
        scenario="simple_adversary_v3",
        kwargs=(("N", 2), *_COMMON),
        team=("agent_0", "agent_1"),
        opponents=(("adversary_0", "adversary-goal-guess"),),
        heuristic="adversary-cover",
        has_subtasks=True,
        summary="2 good agents hide the goal from a scripted adversary",
    )


def tag_v0() -> TaskSpec:
    """Predator-prey (mpe2 ``simple_tag_v3``): 3 learning predators vs 1 scripted prey.

    ## Observation
    Per predator (16): velocity 2, position 2, obstacles relative 4, other agents relative 6,
    prey velocity 2.
    ## Actions
    Discrete(5).
    ## State
    48 = 3 × 16.
    ## Reward
    Every predator gets +10 per predator-prey collision; team = Σ over predators (= 30 per hit).
    ## Opponent
    ``agent_0`` (scripted, ``prey-flee``): flees the predators (inverse-square weighted), pushed
    back from the walls; with prob. 0.1 a random move, seeded by the episode seed.
    ## Episode end
    Truncation after 25 steps; the limit is part of the task (terminal for learning).
    ## Subtasks
    None (one prey).
    ## Version history
    v0: mpe2 1.1.1, 3 predators, 1 prey, 2 obstacles, prey-flee ε=0.1.
    """
    return TaskSpec(
        id="mpe/tag-v0",
        time_limit_is_task=True,  # the score is the 25-step return: reaching 25 is terminal
        scenario="simple_tag_v3",
        kwargs=(("num_good", 1), ("num_adversaries", 3), ("num_obstacles", 2), *_COMMON),
        team=("adversary_0", "adversary_1", "adversary_2"),
        opponents=(("agent_0", "prey-flee"),),
        heuristic="tag-chase",
        summary="3 predators catch 1 scripted prey",
    )


def tag_4v2_v0() -> TaskSpec:
    """Predator-prey 4 vs 2 (mpe2 ``simple_tag_v3``): 4 learning predators vs 2 scripted prey.

    Re-creation in the spirit of Kaleidoscope's "World 4v2" on mpe2; it is *not* that paper's task.

    ## Observation
    Per predator (22): velocity 2, position 2, obstacles relative 4, other agents relative 10,
    prey velocities 4.
    ## Actions
    Discrete(5).
    ## State
    88 = 4 × 22.
    ## Reward
    Every predator gets +10 per predator-prey collision; team = Σ over predators (= 40 per hit).
    ## Opponent
    ``agent_0``, ``agent_1`` (scripted, ``prey-flee``), each with its own seeded ε=0.1 stream.
    ## Episode end
    Truncation after 25 steps; the limit is part of the task (terminal for learning).
    ## Subtasks
    Prey (2).
    ## Version history
    v0: mpe2 1.1.1, 4 predators, 2 prey, 2 obstacles, prey-flee ε=0.1.
    """
    return TaskSpec(
        id="mpe/tag-4v2-v0",
        time_limit_is_task=True,  # the score is the 25-step return: reaching 25 is terminal
        scenario="simple_tag_v3",
        kwargs=(("num_good", 2), ("num_adversaries", 4), ("num_obstacles", 2), *_COMMON),
        team=("adversary_0", "adversary_1", "adversary_2", "adversary_3"),
        opponents=(("agent_0", "prey-flee"), ("agent_1", "prey-flee")),
        heuristic="tag-chase",
        has_subtasks=True,
        summary="4 predators catch 2 scripted prey",
    )


_SIGHT_DISTANCES = """Measured distances (``tests/test_sight.py`` re-measures the shares within R):
    every controlled agent to every other entity, at every step of 320 episodes (the eval
    seeds' count), numpy backend. spread-v0: random policy quantiles 10/25/50/75/90 % =
    0.48 / 0.78 / 1.19 / 1.65 / 2.08, share within 0.5 = 11 %, within 1.0 = 38 %; heuristic
    policy 0.13 / 0.48 / 0.91 / 1.32 / 1.66, within 0.5 = 26 %, within 1.0 = 56 %. tag-4v2-v0:
    random 0.50 / 0.76 / 1.14 / 1.55 / 1.90, within 0.5 = 10 %, within 1.0 = 41 %; heuristic
    0.32 / 0.55 / 0.93 / 1.36 / 1.73, within 0.5 = 22 %, within 1.0 = 54 %. R = 1.0 hides about
    half of the world (the median distance), R = 0.5 hides about four fifths of it."""


def _sight_doc(radius: float, base: str, flat: str, flags: str) -> str:
    return f"""
    ## Observation
    ``{base}``'s observation with a sight radius R = {radius}: per agent, {flat}; every entity
    farther than R from the agent is zeroed (its relative position and, where present, its
    message or velocity), then {flags} visibility flags (1 = within R) in the observation's
    entity order (``kaleibench.envs.sight``). Own velocity and position are always observed.
    Entity view: ``obs_mask`` is the same within-R test between every pair of entities.
    ## State
    Global: the concatenated *unmasked* observations, as ``{base}``.
    ## Heuristic reference
    The task's scripted team policy on the masked observations, pooled over the team (seen
    entities are shared through the always-observed own positions), searching a ring of radius
    0.5 when nothing useful is seen.
    ## Distances
    {_SIGHT_DISTANCES}
    """


def _with_sight(base: TaskSpec, task_id: str, radius: float) -> TaskSpec:
    return TaskSpec(
        id=task_id, scenario=base.scenario, kwargs=base.kwargs, team=base.team,
        opponents=base.opponents, heuristic=base.heuristic, opponent_eps=base.opponent_eps,
        has_subtasks=base.has_subtasks,
        time_limit_is_task=True,  # the score is the 25-step return: reaching 25 is terminal
        summary=f"{base.summary}; sight radius {radius}", sight_radius=radius,
    )


def spread_sight10_v0() -> TaskSpec:
    """``mpe/spread-v0`` seen through a sight radius of 1.0 (partial observability).

    Observation 23 = 18 + 5 flags (3 landmarks, 2 other agents); actions, reward, episode end
    and subtasks as ``mpe/spread-v0``; state 54 (global).

    ## Version history
    v0: mpe2 1.1.1, N=3, local_ratio=0.5, sight radius 1.0.
    """
    return _with_sight(spread_v0(), "mpe/spread-sight10-v0", 1.0)


def spread_sight05_v0() -> TaskSpec:
    """``mpe/spread-v0`` seen through a sight radius of 0.5 (strong partial observability).

    Observation 23 = 18 + 5 flags (3 landmarks, 2 other agents); actions, reward, episode end
    and subtasks as ``mpe/spread-v0``; state 54 (global).

    ## Version history
    v0: mpe2 1.1.1, N=3, local_ratio=0.5, sight radius 0.5.
    """
    return _with_sight(spread_v0(), "mpe/spread-sight05-v0", 0.5)


def tag_4v2_sight10_v0() -> TaskSpec:
    """``mpe/tag-4v2-v0`` seen through a sight radius of 1.0 (partial observability).

    Observation 29 = 22 + 7 flags (2 obstacles, 3 other predators, 2 prey; a hidden prey's
    velocity is zeroed with its position); actions, reward, opponents, episode end and subtasks
    as ``mpe/tag-4v2-v0``; state 88 (global).

    ## Version history
    v0: mpe2 1.1.1, 4 predators, 2 prey, 2 obstacles, prey-flee ε=0.1, sight radius 1.0.
    """
    return _with_sight(tag_4v2_v0(), "mpe/tag-4v2-sight10-v0", 1.0)


def tag_4v2_sight05_v0() -> TaskSpec:
    """``mpe/tag-4v2-v0`` seen through a sight radius of 0.5 (strong partial observability).

    Observation 29 = 22 + 7 flags (2 obstacles, 3 other predators, 2 prey; a hidden prey's
    velocity is zeroed with its position); actions, reward, opponents, episode end and subtasks
    as ``mpe/tag-4v2-v0``; state 88 (global).

    ## Version history
    v0: mpe2 1.1.1, 4 predators, 2 prey, 2 obstacles, prey-flee ε=0.1, sight radius 0.5.
    """
    return _with_sight(tag_4v2_v0(), "mpe/tag-4v2-sight05-v0", 0.5)


for _factory, _radius in ((spread_sight10_v0, 1.0), (spread_sight05_v0, 0.5),
                          (tag_4v2_sight10_v0, 1.0), (tag_4v2_sight05_v0, 0.5)):
    _base = "mpe/spread-v0" if "spread" in _factory.__name__ else "mpe/tag-4v2-v0"
    _head, _sep, _history = (_factory.__doc__ or "").partition("    ## Version history")
    _factory.__doc__ = _head.rstrip() + "\n" + _sight_doc(
        _radius, _base,
        "18 = vel 2, pos 2, landmarks 6, other agents 4, their messages 4" if "spread" in _base
        else "22 = vel 2, pos 2, obstacles 4, other agents 10, prey velocities 4",
        "5" if "spread" in _base else "7").rstrip(" ") + _sep + _history


ALL_TASKS = (
    spread_v0,
    spread_n6_v0,
    speaker_listener_v0,
    reference_v0,
    adversary_v0,
    tag_v0,
    tag_4v2_v0,
    spread_sight10_v0,
    spread_sight05_v0,
    tag_4v2_sight10_v0,
    tag_4v2_sight05_v0,
)


BOUNDS: dict[str, tuple[float, float]] = {
    "mpe/spread-v0": (-79.61, -30.89),
    "mpe/spread-n6-v0": (-237.68, -103.35),
    "mpe/speaker-listener-v0": (-79.39, -18.01),
    "mpe/reference-v0": (-57.05, -19.31),
    "mpe/adversary-v0": (-5.77, 16.84),
    "mpe/tag-v0": (2.81, 49.5),
    "mpe/tag-4v2-v0": (9.88, 99.0),
    "mpe/spread-sight10-v0": (-79.22, -36.01),
    "mpe/spread-sight05-v0": (-79.22, -50.77),
    "mpe/tag-4v2-sight10-v0": (10.5, 96.75),
    "mpe/tag-4v2-sight05-v0": (10.5, 56.25),
}
"""Normalisation bounds per task id: (random, reference) mean team returns of the ``random`` and
``heuristic`` variants on the 320 fixed eval seeds, measured with ``kaleibench run --variants
random heuristic --tasks <id> --seeds 0``. Normalised score = (return − random) / (reference −
random). The sight variants' bounds are the ``final_return`` of a run of each reference
variant with ``eval_episodes: 320`` (so exactly the eval seeds 0..319 above), which reproduces
the heuristic entries of the fully observed tasks to the digit; their random bounds equal a
fresh measurement of the fully observed task's (a random policy ignores what it sees), and
their references are the sight-limited heuristic's. Suites state the same values (a test
checks they agree) and may omit them; single runs (``run --variant X --task T``) take them from
here. A new task version gets its own entry."""


def task_bounds(task_id: str) -> tuple[float, float] | None:
    """(random, reference) bounds of ``task_id``, or None if they were never measured.

    Examples:
        >>> task_bounds("mpe/spread-v0")
        (-79.61, -30.89)
    """
    return BOUNDS.get(task_id)
