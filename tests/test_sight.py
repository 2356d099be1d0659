"""Sight-radius tasks: nothing beyond the radius reaches an observation, both views agree, the
state stays global, and the documented distance distribution still holds."""

from __future__ import annotations

import numpy as np
import pytest

from kaleibench.envs import make, task_spec
from kaleibench.envs.batched import NumpyTask
from kaleibench.envs.entities import entity_layout
from kaleibench.envs.sight import sight_layout, split, visible

SIGHT_TASKS = ("mpe/spread-sight10-v0", "mpe/spread-sight05-v0", "mpe/tag-4v2-sight10-v0",
               "mpe/tag-4v2-sight05-v0")
BASE = {"spread": "mpe/spread-v0", "tag-4v2": "mpe/tag-4v2-v0"}


def _base(task_id: str) -> str:
    return BASE["spread" if "spread" in task_id else "tag-4v2"]


def _world_pos(env: NumpyTask) -> np.ndarray:
    return env.world.pos.transpose(2, 0, 1).copy()  # (B, W, 2)


@pytest.mark.parametrize("task_id", SIGHT_TASKS)
def test_hidden_entities_do_not_leak(task_id: str) -> None:
    """Black box: move every entity an agent cannot see (farther away from that agent, with a
    new velocity); that agent's observation does not change by a single bit."""
    env = make(task_id, n_envs=4, seed=0, backend="numpy")
    assert isinstance(env, NumpyTask)
    spec = env.spec
    radius = float(spec.sight_radius)  # type: ignore[arg-type]
    team = env.scenario.team_idx
    rng = np.random.default_rng(0)
    ts = env.reset([3, 4, 5, 6])
    n_hidden = 0
    for _ in range(env.episode_limit):
        ts = env.step(rng.integers(0, env.n_actions, size=(4, env.n_agents)))
        before = ts.obs.copy()
        pos, vel = env.world.pos.copy(), env.world.vel.copy()
        for b in range(4):
            for i, me in enumerate(team):
                far = np.hypot(*(pos[:, :, b] - pos[me, :, b]).T) > radius  # (W,)
                for j in np.flatnonzero(far):
                    env.world.pos[j, :, b] = pos[me, :, b] + 1.7 * (pos[j, :, b] - pos[me, :, b])
                    if j < env.world.vel.shape[0]:
                        env.world.vel[j, :, b] = rng.normal(size=2)
                n_hidden += int(far.sum())
                moved = env._timestep(np.zeros((4, env.n_agents), np.float32), ts.truncated)
                np.testing.assert_array_equal(moved.obs[b, i], before[b, i], err_msg=f"{b} {i}")
                env.world.pos[:], env.world.vel[:] = pos, vel
    assert n_hidden > 100


@pytest.mark.parametrize("backend", ["numpy", "mpe2"])
@pytest.mark.parametrize("task_id", SIGHT_TASKS)
def test_flat_flags_equal_entity_obs_mask_and_state_is_global(task_id: str, backend: str) -> None:
    """The flat observation's flags are exactly the entity view's ``obs_mask`` rows of the
    team agents; visible columns equal the unmasked ones; the state is the full task's state."""
    env = make(task_id, n_envs=3, seed=0, backend=backend)
    full_env = make(_base(task_id), n_envs=3, seed=0, backend=backend)
    sight = sight_layout(env.spec)
    layout = entity_layout(env.spec)
    assert sight is not None
    view_row = {int(w): e for e, w in enumerate(layout.order)}  # world index -> view row
    rng = np.random.default_rng(1)
    ts, ts_full = env.reset([7, 8, 9]), full_env.reset([7, 8, 9])
    seen = hidden = 0
    for t in range(env.episode_limit + 1):
        np.testing.assert_array_equal(ts.state, ts_full.state)
        masked, flags = split(sight, ts.obs)
        np.testing.assert_array_equal(
            masked, np.where(masked != 0, ts_full.obs[:, :, : sight.full_size], 0))
        for i in range(env.n_agents):
            rows = [view_row[int(w)] for w in sight.slots[i]]
            np.testing.assert_array_equal(flags[:, i], ts.info["obs_mask"][:, i, rows])
        seen, hidden = seen + int(flags.sum()), hidden + int((~flags).sum())
        if t == env.episode_limit:
            break
        act = rng.integers(0, env.n_actions, size=(3, env.n_agents))
        ts, ts_full = env.step(act), full_env.step(act)
    assert seen > 0 and hidden > 0
    diag = ts.info["obs_mask"][:, np.arange(layout.n_entities), np.arange(layout.n_entities)]
    assert diag.all()


def test_flags_follow_the_documented_layout() -> None:
    """spread, agent 0 at the origin: landmark 1 and agent 2 within 0.5, the rest outside."""
    spec = task_spec("mpe/spread-sight05-v0")
    sight = sight_layout(spec)
    assert sight is not None and sight.n_slots == 5 and sight.full_size == 18
    pos = np.array([[[0, 0], [2, 0], [0.3, 0.4], [0.9, 0], [0.1, 0.1], [-1, 1]]], dtype=float)
    flags = visible(pos, sight.team, sight.slots, sight.radius)[0]
    assert flags[0].tolist() == [False, True, False, False, True]  # landmarks 0-2, agents 1, 2
    cols = sight.column_slot
    assert (cols[:4] == -1).all() and cols[4:10].tolist() == [0, 0, 1, 1, 2, 2]
    assert cols[10:14].tolist() == [3, 3, 4, 4] and cols[14:18].tolist() == [3, 3, 4, 4]
    tag = sight_layout(task_spec("mpe/tag-4v2-sight05-v0"))
    assert tag is not None and tag.n_slots == 7 and tag.full_size == 22
    assert tag.column_slot[18:22].tolist() == [5, 5, 6, 6]  # prey velocities follow the prey


def test_spec_json_mentions_the_radius_only_when_set() -> None:
    assert "sight_radius" not in task_spec("mpe/spread-v0").to_json()
    assert task_spec("mpe/spread-sight05-v0").to_json()["sight_radius"] == 0.5
    assert task_spec("mpe/spread-sight05-v0").time_limit_is_task is True


@pytest.mark.parametrize(("task_id", "within"), [
    ("mpe/spread-v0", {0.5: 0.108, 1.0: 0.379}), ("mpe/tag-4v2-v0", {0.5: 0.102, 1.0: 0.409})])
def test_documented_distance_distribution(task_id: str, within: dict[float, float]) -> None:
    """The shares of agent-entity distances within each radius under a uniform random policy
    (320 episodes, every step) that the task docstrings quote."""
    env = make(task_id, n_envs=32, seed=0, backend="numpy")
    assert isinstance(env, NumpyTask)
    team = env.scenario.team_idx
    rng = np.random.default_rng(0)
    dists = []
    for r in range(10):
        env.reset(list(range(32 * r, 32 * r + 32)))
        for t in range(env.episode_limit + 1):
            pos = _world_pos(env)
            d = np.linalg.norm(pos[:, team, None] - pos[:, None], axis=-1)  # (B, N, W)
            d[:, np.arange(len(team)), team] = np.nan  # not oneself
            dists.append(d[~np.isnan(d)])
            if t < env.episode_limit:
                env.step(rng.integers(0, 5, size=(32, env.n_agents)))
    d = np.concatenate(dists)
    for radius, share in within.items():
        assert float((d <= radius).mean()) == pytest.approx(share, abs=0.001), radius
