"""Task contract, determinism and transition parity with raw mpe2 parallel envs."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import kaleibench
from kaleibench.envs import tasks
from kaleibench.envs.mpe import episode_streams
from kaleibench.envs.scripted import opponent_action, opponent_noise, steer
from kaleibench.envs.sight import observe, sight_layout
from kaleibench.registry import UnknownIdError

TASK_IDS = tasks.names()


def test_eleven_tasks_registered() -> None:
    assert TASK_IDS == sorted([
        "mpe/spread-v0", "mpe/spread-n6-v0", "mpe/speaker-listener-v0", "mpe/reference-v0",
        "mpe/adversary-v0", "mpe/tag-v0", "mpe/tag-4v2-v0",
        "mpe/spread-sight10-v0", "mpe/spread-sight05-v0",
        "mpe/tag-4v2-sight10-v0", "mpe/tag-4v2-sight05-v0"])


def test_unknown_task_suggests() -> None:
    with pytest.raises(UnknownIdError, match="Did you mean: `mpe/spread-v0`"):
        kaleibench.make("mpe/sprad-v0")


def _random_actions(ts: kaleibench.TimeStep, rng: np.random.Generator) -> np.ndarray:
    scores = rng.random(ts.avail_actions.shape) * ts.avail_actions
    return scores.argmax(-1)


@pytest.mark.parametrize("backend", ["mpe2", "numpy"])
@pytest.mark.parametrize("task_id", TASK_IDS)
def test_shapes_and_episode_end(task_id: str, backend: str) -> None:
    env = kaleibench.make(task_id, n_envs=3, seed=0, backend=backend)
    ts = env.reset([1, 2, 3])
    b, n, o, a = 3, env.n_agents, env.obs_dim, env.n_actions
    assert ts.obs.shape == (b, n, o) and ts.obs.dtype == np.float32
    assert ts.state.shape == (b, env.state_dim) and ts.avail_actions.shape == (b, n, a)
    rng = np.random.default_rng(0)
    for t in range(env.episode_limit):
        ts = env.step(_random_actions(ts, rng))
        assert ts.reward.shape == (b,) and ts.info["agent_rewards"].shape == (b, n)
        np.testing.assert_allclose(ts.reward, ts.info["agent_rewards"].sum(1), rtol=1e-6)
        last = t == env.episode_limit - 1
        assert ts.truncated.all() == last and not ts.terminated.any()
    with pytest.raises(RuntimeError):
        env.step(np.zeros((b, n), dtype=int))


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_same_seed_same_episode(task_id: str) -> None:
    runs = []
    for _ in range(2):
        env = kaleibench.make(task_id, n_envs=2, seed=5)
        ts, rng, obs = env.reset(), np.random.default_rng(1), []
        for _ in range(env.episode_limit):
            ts = env.step(_random_actions(ts, rng))
            obs.append(ts.obs.copy())
        runs.append(np.stack(obs))
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("backend", ["mpe2", "numpy"])
@pytest.mark.parametrize("task_id", TASK_IDS)
def test_parity_with_raw_mpe2(task_id: str, backend: str) -> None:
    """Drive a raw mpe2 parallel_env with the same seed and actions (opponents replayed by the
    same rule and noise plan): observations, per-agent rewards and truncation agree exactly."""
    spec = tasks.get(task_id)
    module = importlib.import_module(f"mpe2.{spec.scenario}")
    rng = np.random.default_rng(3)
    for seed in (11, 12):
        ours = kaleibench.make(task_id, n_envs=1, backend=backend)
        raw = module.parallel_env(**dict(spec.kwargs))
        ts = ours.reset([seed])
        raw_obs, _ = raw.reset(seed=seed)
        streams = episode_streams(seed, len(spec.opponents))
        n_opp = [int(raw.action_space(o).n) for o, _ in spec.opponents]
        plans = [opponent_noise(r, ours.episode_limit, spec.opponent_eps, k)
                 for r, k in zip(streams, n_opp, strict=True)]
        sight = sight_layout(spec)
        for t in range(ours.episode_limit):
            full = np.zeros((1, spec.n_agents, ours.state_dim // spec.n_agents), np.float32)
            for i, name in enumerate(spec.team):
                size = raw.observation_space(name).shape[0]
                full[0, i, :size] = raw_obs[name]
            if sight is None:
                np.testing.assert_array_equal(ts.obs, full)
            else:  # the mask applied to mpe2's own observations and world positions
                pos = np.array([[e.state.p_pos for e in raw.unwrapped.world.entities]])
                np.testing.assert_array_equal(ts.obs, observe(sight, full, pos))
            np.testing.assert_array_equal(ts.state, full.reshape(1, -1))  # always global
            act = _random_actions(ts, rng)
            raw_act = {name: int(act[0, i]) for i, name in enumerate(spec.team)}
            for k, (name, policy) in enumerate(spec.opponents):
                raw_act[name] = opponent_action(policy, raw_obs[name], spec, int(plans[k][t]))
            ts = ours.step(act)
            raw_obs, rew, term, trunc, _ = raw.step(raw_act)
            np.testing.assert_allclose(
                ts.info["agent_rewards"][0], [rew[a] for a in spec.team], rtol=0, atol=1e-6)
            assert bool(ts.truncated[0]) == any(trunc.values())
            assert not ts.terminated[0] and not any(term.values())
        assert raw.agents == []  # PettingZoo emptied `agents`; we still read the last reward


def test_scripted_opponents_are_part_of_the_task() -> None:
    """Different seeds give different noise plans; the prey flees."""
    a = opponent_noise(np.random.default_rng(0), 25, 0.1, 5)
    b = opponent_noise(np.random.default_rng(1), 25, 0.1, 5)
    assert a.shape == (25,) and not np.array_equal(a, b)
    assert steer(np.array([1.0, 0.0])) == 2 and steer(np.array([0.0, -1.0])) == 3


def test_reference_bounds_are_ordered() -> None:
    """The heuristic must beat uniform random on every task (they bound normalised scores)."""
    from kaleibench.algos import load_variant
    from kaleibench.algos.base import EnvInfo
    from kaleibench.train.rollout import evaluate

    for task_id in TASK_IDS:
        env = kaleibench.make(task_id, n_envs=8)
        info = EnvInfo.of(env)
        seeds = list(range(16))
        rand = evaluate(env, load_variant("random").build(info, 0), seeds, 0).mean()
        heur = evaluate(env, load_variant("heuristic").build(info, 0), seeds, 0).mean()
        assert heur > rand, (task_id, heur, rand)
