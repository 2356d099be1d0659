"""The entity view of the MPE tasks with subtasks, as pure functions of world arrays.

ALMA (Iqbal, Costales, Sha, NeurIPS 2022, arXiv 2206.07505) sees a task as a set of entities,
each belonging to subtasks. Both backends describe a world the same way (mpe2's
``world.entities`` order: agents, then landmarks), so one layout computed from the
:class:`TaskSpec` serves both; the backends only hand in positions, velocities and the goal index.

Conventions (all masks are *positive*, unlike ALMA's inverted uint8 masks):

* entities: controlled agents first (``spec.team`` order), then the subtask entities (one per
  subtask, subtask ``k`` = the k-th), then the other entities (opponents, obstacles).
* features F = 10: type one-hot [team agent, subtask entity, opponent, obstacle], x, y, vx, vy,
  size, is_goal. Absolute frame, as ALMA.
* ``entity_mask[e]`` True = present; ``obs_mask[i, j]`` True = i can see j (all True in the
  fully observed tasks; with a sight radius, ``kaleibench.envs.sight.visible`` between the two
  entities, the same test the flat observation uses); ``entity2task[e, k]`` True = e belongs
  to subtask k — agent rows are all False (the allocator fills them), entities of no particular
  subtask (tag obstacles, the adversary) belong to *every* subtask so they stay visible under
  subtask masking; ``task_mask[k]`` True = active (MPE subtasks never complete).
* ``task_rewards (B, K)`` sum to the team reward: each subtask's share is computed from the world
  (:func:`task_reward_shares`), and the remainder ``team − Σ_k R_k`` (spread: the collision
  penalties, which belong to no landmark; otherwise float rounding) is split evenly over the
  subtasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kaleibench.envs.base import TaskSpec
from kaleibench.envs.sight import visible

N_FEATURES = 10
ENTITY_KEYS = ("entities", "entity_mask", "obs_mask", "entity2task", "task_mask", "task_rewards")
"""The ``TimeStep.info`` keys of the entity view."""


@dataclass(frozen=True)
class EntityLayout:
    """Static description of one task's entities, computed from its spec."""

    scenario: str
    order: np.ndarray  # (E,) world entity index of each view entity
    kind: np.ndarray  # (E,) 0 team agent, 1 subtask entity, 2 opponent, 3 obstacle
    size: np.ndarray  # (E,) radii
    task_of: np.ndarray  # (E, K) bool static membership (agent rows False)
    n_agents: int  # controlled agents N (= first N rows)
    n_team_world: int  # number of good/predator agents used by the reward shares

    @property
    def n_entities(self) -> int:
        """E."""
        return len(self.order)

    @property
    def n_tasks(self) -> int:
        """K."""
        return int(self.task_of.shape[1])


def _layout(spec: TaskSpec, kinds: list[tuple[int, int, float]], n_tasks: int) -> EntityLayout:
    """Build a layout from (world index, kind, size) rows; subtask entities in task order."""
    order = np.array([r[0] for r in kinds])
    kind = np.array([r[1] for r in kinds])
    task_of = np.zeros((len(kinds), n_tasks), dtype=bool)
    task_of[kind == 1] = np.eye(n_tasks, dtype=bool)
    task_of[kind >= 2] = True
    return EntityLayout(spec.scenario, order, kind, np.array([r[2] for r in kinds]), task_of,
                        spec.n_agents, spec.n_agents)


def entity_layout(spec: TaskSpec) -> EntityLayout:
    """The entity layout of a task with subtasks (spread, tag with ≥ 2 prey, adversary).

    Raises:
        ValueError: if the task has no subtasks.
    """
    if not spec.has_subtasks:
        raise ValueError(f"task {spec.id} has no subtasks (no entity view)")
    kw = dict(spec.kwargs)
    if spec.scenario == "simple_spread_v3":
        n = int(kw["N"])
        rows = [(i, 0, 0.15) for i in range(n)] + [(n + j, 1, 0.05) for j in range(n)]
        return _layout(spec, rows, n)
    if spec.scenario == "simple_tag_v3":
        p, g, o = int(kw["num_adversaries"]), int(kw["num_good"]), int(kw["num_obstacles"])
        rows = [(i, 0, 0.075) for i in range(p)] + [(p + j, 1, 0.05) for j in range(g)]
        rows += [(p + g + j, 3, 0.2) for j in range(o)]
        return _layout(spec, rows, g)
    if spec.scenario == "simple_adversary_v3":
        n = int(kw["N"])
        rows = [(1 + i, 0, 0.15) for i in range(n)] + [(1 + n + j, 1, 0.08) for j in range(n)]
        rows += [(0, 2, 0.15)]
        return _layout(spec, rows, n)
    raise ValueError(f"task {spec.id}: no entity layout for scenario {spec.scenario!r}")


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """‖a − b‖ over the last axis (size 2)."""
    d = a - b
    return np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])


def task_reward_shares(layout: EntityLayout, pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Each subtask's share of the team reward computed from the world.

    * spread: ``R_j = N (1 − lr) · (−min_i d(i, l_j))`` with lr = 0.5;
    * tag: ``R_j = N · 10 · #collisions(predators, prey_j)``;
    * adversary: goal ``−N · min_i d(i, goal)``, decoys share ``+N · d(adversary, goal)``.

    Args:
        layout: the task's layout.
        pos: (B, W, 2) world positions (mpe2 entity order).
        goal: (B,) goal landmark index among the subtasks (adversary only; else ignored).

    Returns:
        (B, K) float64 shares (without the evenly split remainder).
    """
    n, k = layout.n_team_world, layout.n_tasks
    agents = pos[:, layout.order[: layout.n_agents]]  # (B, N, 2)
    targets = pos[:, layout.order[layout.kind == 1]]  # (B, K, 2)
    gap = _dist(agents[:, :, None], targets[:, None])  # (B, N, K)
    if layout.scenario == "simple_spread_v3":
        return n * 0.5 * -gap.min(axis=1)
    if layout.scenario == "simple_tag_v3":
        hits = gap < (layout.size[0] + layout.size[layout.kind == 1])[None, None]  # (B, N, K)
        return n * 10.0 * hits.sum(axis=1)
    rows = np.arange(pos.shape[0])
    adversary = pos[:, layout.order[layout.kind == 2][0]]  # (B, 2)
    goal_pos = targets[rows, goal]  # (B, 2)
    is_goal = np.eye(k, dtype=bool)[goal]  # (B, K)
    decoy = n * _dist(adversary, goal_pos) / max(k - 1, 1)  # (B,)
    near = -n * gap[rows, :, goal].min(axis=1)  # (B,)
    return np.where(is_goal, near[:, None], decoy[:, None])


def entity_view(layout: EntityLayout, pos: np.ndarray, vel: np.ndarray, goal: np.ndarray,
                team_reward: np.ndarray | None,
                sight_radius: float | None = None) -> dict[str, np.ndarray]:
    """The entity view of B worlds.

    Args:
        layout: the task's layout.
        pos: (B, W, 2) world positions; vel: (B, W, 2) velocities (landmarks 0).
        goal: (B,) goal subtask index (adversary), zeros otherwise.
        team_reward: (B,) reward of the step that led here; None at reset (rewards 0).
        sight_radius: None = every entity sees every other; else ``obs_mask`` is
            :func:`kaleibench.envs.sight.visible` between every pair of view entities.

    Returns:
        The :data:`ENTITY_KEYS` arrays: entities (B, E, F) float32, entity_mask (B, E),
        obs_mask (B, E, E), entity2task (B, E, K), task_mask (B, K) bool, task_rewards (B, K)
        float32 with ``task_rewards.sum(-1) == team_reward`` (up to float32 rounding).
    """
    b, e, k = pos.shape[0], layout.n_entities, layout.n_tasks
    feats = np.zeros((b, e, N_FEATURES), dtype=np.float32)
    feats[:, :, :4] = np.eye(4, dtype=np.float32)[layout.kind]
    feats[:, :, 4:6] = pos[:, layout.order]
    feats[:, :, 6:8] = vel[:, layout.order]
    feats[:, :, 8] = layout.size
    if layout.scenario == "simple_adversary_v3":
        subtask_rows = np.flatnonzero(layout.kind == 1)
        feats[np.arange(b), subtask_rows[goal], 9] = 1.0
    if team_reward is None:
        rewards = np.zeros((b, k), dtype=np.float32)
    else:
        shares = task_reward_shares(layout, pos, goal)  # (B, K)
        rest = np.asarray(team_reward, dtype=np.float64) - shares.sum(axis=1)  # (B,)
        rewards = (shares + rest[:, None] / k).astype(np.float32)
    if sight_radius is None:
        obs_mask = np.ones((b, e, e), dtype=bool)
    else:
        targets = np.broadcast_to(layout.order, (e, e))  # row i: every view entity, from i
        obs_mask = visible(pos, layout.order, targets, sight_radius)
    return {
        "entities": feats,
        "entity_mask": np.ones((b, e), dtype=bool),
        "obs_mask": obs_mask,
        "entity2task": np.broadcast_to(layout.task_of, (b, e, k)).copy(),
        "task_mask": np.ones((b, k), dtype=bool),
        "task_rewards": rewards,
    }
