"""The numpy backend against the mpe2 reference, the batched opponents, the PettingZoo view."""

from __future__ import annotations

import numpy as np
import pytest

from kaleibench.envs import make
from kaleibench.envs.base import TimeStep
from kaleibench.envs.batched_scripted import adversary_goal_guess_batch, prey_flee_batch
from kaleibench.envs.mpe import Mpe2Task
from kaleibench.envs.scripted import adversary_to_goal_guess, prey_flee
from kaleibench.envs.tasks import ALL_TASKS

TASK_IDS = [factory().id for factory in ALL_TASKS]
ROWS, RESETS, ATOL = 10, 10, 1e-5  # 100 episodes per task


def _assert_same(ref: TimeStep, new: TimeStep, where: str) -> None:
    for key in ("obs", "state", "reward", "avail_actions"):
        a, b = getattr(ref, key), getattr(new, key)
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: {key} layout"
        np.testing.assert_allclose(b, a, atol=ATOL, rtol=0, err_msg=f"{where}: {key}")
    np.testing.assert_allclose(
        new.info["agent_rewards"], ref.info["agent_rewards"], atol=ATOL, rtol=0,
        err_msg=f"{where}: agent_rewards",
    )
    np.testing.assert_array_equal(new.terminated, ref.terminated, err_msg=f"{where}: terminated")
    np.testing.assert_array_equal(new.truncated, ref.truncated, err_msg=f"{where}: truncated")


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_numpy_backend_matches_mpe2(task_id: str) -> None:
    """Same seeds, same random team actions: every TimeStep field and opponent move agree."""
    ref = make(task_id, n_envs=ROWS, seed=0, backend="mpe2")
    new = make(task_id, n_envs=ROWS, seed=0, backend="numpy")
    assert isinstance(ref, Mpe2Task)
    for attr in ("n_agents", "obs_dim", "state_dim", "n_actions", "episode_limit"):
        assert getattr(new, attr) == getattr(ref, attr), attr
    assert new.obs_sizes == ref.obs_sizes and new.action_sizes == ref.action_sizes  # type: ignore
    rng = np.random.default_rng(123)
    limits = np.array(ref.action_sizes)
    opp_idx = new.scenario.opp_idx  # type: ignore[attr-defined]
    for r in range(RESETS):
        seeds = [1000 * r + 17 * b for b in range(ROWS)]
        _assert_same(ref.reset(seeds), new.reset(seeds), f"{task_id} reset {r}")
        done = False
        for t in range(ref.episode_limit):
            assert not done
            actions = rng.integers(0, limits, size=(ROWS, ref.n_agents))
            opp_ref = [list(ref.opponent_actions(b).values()) for b in range(ROWS)]
            ts_ref, ts_new = ref.step(actions), new.step(actions)
            opp_new = new._actions[opp_idx].T  # type: ignore[attr-defined]
            np.testing.assert_array_equal(opp_new, np.array(opp_ref).reshape(opp_new.shape))
            _assert_same(ts_ref, ts_new, f"{task_id} reset {r} step {t}")
            done = bool(ts_new.truncated.all() or ts_new.terminated.all())
        assert done, "episodes end by truncation at the limit"


@pytest.mark.parametrize("task_id", ["mpe/spread-v0", "mpe/tag-4v2-v0"])
def test_default_seed_stream_matches(task_id: str) -> None:
    """Unseeded resets draw the same episode seeds from ``make(seed=...)`` in both backends."""
    ref = make(task_id, n_envs=3, seed=7, backend="mpe2")
    new = make(task_id, n_envs=3, seed=7, backend="numpy")
    for _ in range(2):
        _assert_same(ref.reset(), new.reset(), task_id)
        zeros = np.zeros((3, ref.n_agents), dtype=np.int64)
        for _ in range(ref.episode_limit):
            _assert_same(ref.step(zeros), new.step(zeros), task_id)


def test_vectorised_opponent_rules_equal_scalar_rules() -> None:
    """The batched rules pick exactly the scalar rules' moves, ties and deadzones included."""
    rng = np.random.default_rng(5)
    rows, n_pred, n_obst = 4000, 4, 2
    obs = rng.uniform(-1.5, 1.5, size=(rows, 4 + 2 * n_obst + 2 * n_pred)).astype(np.float32)
    obs[: rows // 4, 4 + 2 * n_obst :] = 0.0  # predators on the prey: clamped distances
    obs[rows // 4 : rows // 2, 2:4] = np.float32(0.7)  # on the wall margin
    start = 4 + 2 * n_obst
    preds = obs[:, start:].reshape(rows, n_pred, 2)
    got = prey_flee_batch(obs[:, 2:4].copy(), preds.copy())
    want = [prey_flee(o, n_obst, n_pred) for o in obs]
    np.testing.assert_array_equal(got, want)
    adv = rng.uniform(-2, 2, size=(rows, 8)).astype(np.float32)
    adv[: rows // 4, :2] = rng.uniform(-0.04, 0.04, size=(rows // 4, 2))  # inside the deadzone
    adv[rows // 4 : rows // 2, 0] = adv[rows // 4 : rows // 2, 1]  # diagonal ties
    got = adversary_goal_guess_batch(adv[:, :4].reshape(rows, 2, 2), adv[:, 4:].reshape(rows, 2, 2))
    np.testing.assert_array_equal(got, [adversary_to_goal_guess(o, 2) for o in adv])


def test_numpy_backend_rejects_misuse() -> None:
    task = make("mpe/speaker-listener-v0", n_envs=2, backend="numpy")
    task.reset([0, 1])
    with pytest.raises(ValueError, match="actions must be"):
        task.step(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="unavailable for speaker_0"):
        task.step(np.array([[3, 0], [0, 0]]))
    with pytest.raises(ValueError, match="2 seeds"):
        task.reset([0])
    for _ in range(task.episode_limit):
        ts = task.step(np.zeros((2, 2), dtype=np.int64))
    assert ts.truncated.all() and not ts.terminated.any()
    with pytest.raises(RuntimeError, match="reset"):
        task.step(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="unknown backend"):
        make("mpe/spread-v0", backend="jax")


@pytest.mark.parametrize("backend", ["numpy", "mpe2"])
@pytest.mark.parametrize("task_id", TASK_IDS)
def test_pettingzoo_view_passes_api_and_seed_tests(task_id: str, backend: str) -> None:
    from pettingzoo.test import parallel_api_test, parallel_seed_test

    from kaleibench.envs.pz_view import parallel_env

    parallel_api_test(parallel_env(task_id, backend=backend), num_cycles=100)
    parallel_seed_test(lambda: parallel_env(task_id, backend=backend))


def test_pettingzoo_view_is_backend_independent() -> None:
    from kaleibench.envs.pz_view import parallel_env

    envs = [parallel_env("mpe/tag-v0", backend=b) for b in ("numpy", "mpe2")]
    outs = [env.reset(seed=11)[0] for env in envs]
    assert envs[0].state().shape == envs[0].state_space.shape
    rng = np.random.default_rng(0)
    while envs[0].agents:
        acts = {a: int(rng.integers(5)) for a in envs[0].agents}
        steps = [env.step(acts) for env in envs]
        outs = [s[0] for s in steps]
        for a in envs[0].possible_agents:
            np.testing.assert_allclose(outs[0][a], outs[1][a], atol=ATOL, rtol=0)
            assert steps[0][1][a] == pytest.approx(steps[1][1][a], abs=ATOL)
        np.testing.assert_allclose(envs[0].state(), envs[1].state(), atol=ATOL, rtol=0)
    assert envs[1].agents == [] and all(steps[0][3].values())
