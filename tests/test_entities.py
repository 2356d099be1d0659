"""The entity view on both backends: shapes, masks and task rewards."""

from __future__ import annotations

import numpy as np
import pytest

from kaleibench.envs import make, task_spec
from kaleibench.envs.entities import ENTITY_KEYS, N_FEATURES, entity_layout

SUBTASK_TASKS = ("mpe/spread-v0", "mpe/spread-n6-v0", "mpe/tag-4v2-v0", "mpe/adversary-v0",
                 "mpe/spread-sight05-v0", "mpe/tag-4v2-sight05-v0")


@pytest.mark.parametrize("backend", ["mpe2", "numpy"])
@pytest.mark.parametrize("task", SUBTASK_TASKS)
def test_task_rewards_sum_to_team_reward(task: str, backend: str) -> None:
    env = make(task, n_envs=3, seed=0, backend=backend)
    layout = entity_layout(env.spec)
    e, k = layout.n_entities, layout.n_tasks
    rng = np.random.default_rng(0)
    ts = env.reset(seeds=[1, 2, 3])
    assert set(ENTITY_KEYS) <= set(ts.info)
    assert ts.info["entities"].shape == (3, e, N_FEATURES)
    assert ts.info["obs_mask"].shape == (3, e, e)
    assert ts.info["entity2task"].shape == (3, e, k)
    assert not ts.info["entity2task"][:, : env.n_agents].any()  # agents: allocator's job
    assert (ts.info["entity2task"][:, env.n_agents :].sum(-1) >= 1).all()
    assert np.all(ts.info["task_rewards"] == 0)
    nonzero = 0.0
    for _ in range(env.episode_limit):
        ts = env.step(rng.integers(0, env.n_actions, size=(3, env.n_agents)))
        np.testing.assert_allclose(ts.info["task_rewards"].sum(-1), ts.reward, rtol=1e-5,
                                   atol=1e-4)
        assert ts.info["task_rewards"].shape == (3, k)
        nonzero += float(np.abs(ts.info["task_rewards"]).sum())
    if "tag" not in task:  # tag rewards are sparse
        assert nonzero > 0


def test_backends_agree_on_entities() -> None:
    a = make("mpe/adversary-v0", n_envs=2, seed=0, backend="mpe2")
    b = make("mpe/adversary-v0", n_envs=2, seed=0, backend="numpy")
    ta, tb = a.reset(seeds=[5, 6]), b.reset(seeds=[5, 6])
    for _ in range(3):
        np.testing.assert_allclose(ta.info["entities"], tb.info["entities"], atol=1e-5)
        act = np.ones((2, 2), dtype=np.int64)
        ta, tb = a.step(act), b.step(act)
    np.testing.assert_allclose(ta.info["task_rewards"], tb.info["task_rewards"], atol=1e-4)
    assert ta.info["entities"][:, :, 9].sum() == 2  # exactly one goal flag per row


def test_tasks_without_subtasks_have_no_view() -> None:
    env = make("mpe/tag-v0", n_envs=1, seed=0, backend="numpy")
    assert "entities" not in env.reset().info
    with pytest.raises(ValueError, match="no subtasks"):
        entity_layout(task_spec("mpe/tag-v0"))


@pytest.mark.parametrize("backend", ["mpe2", "numpy"])
def test_switching_the_view_off_drops_it_and_changes_nothing_else(backend: str) -> None:
    on = make("mpe/spread-v0", n_envs=2, seed=0, backend=backend)
    off = make("mpe/spread-v0", n_envs=2, seed=0, backend=backend)
    off.entity_view = False
    a, b = on.reset(seeds=[5, 6]), off.reset(seeds=[5, 6])
    for _ in range(4):
        assert set(a.info) >= set(ENTITY_KEYS) and set(b.info) == {"agent_rewards"}
        for field in ("obs", "state", "avail_actions", "reward", "terminated", "truncated"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
        act = np.array([[1, 2, 3], [4, 0, 1]])
        a, b = on.step(act), off.step(act)


def test_a_training_run_builds_the_view_only_for_learners_that_read_it(tmp_path) -> None:
    from kaleibench.algos import load_variant
    from kaleibench.train.loop import Run
    from kaleibench.train.spec import RunSpec

    for variant, wanted in (("qmix", False), ("alma-alloc", True)):
        spec = RunSpec(suite="t", variant=load_variant(variant), task="mpe/spread-v0", seed=0,
                       t_max=100, n_envs=2)
        run = Run(spec, tmp_path, progress=False)
        assert run.env.entity_view is wanted and run.eval_env.entity_view is wanted


class _ListingPolicy:
    """A random policy that asks the rollout to store the entity view."""

    learns = False
    needs_subtasks = True
    extra_fields = ENTITY_KEYS

    def init_hidden(self, batch_size: int) -> None:
        return None

    def act(self, ts, hidden, t_env, explore):  # type: ignore[no-untyped-def]
        return np.zeros(ts.avail_actions.shape[:2], dtype=np.int64), hidden


def test_rollout_stores_extra_fields_per_step() -> None:
    from kaleibench.train.rollout import collect

    env = make("mpe/tag-4v2-v0", n_envs=2, seed=0, backend="numpy")
    batch = collect(env, _ListingPolicy(), 0, explore=False, seeds=[3, 4]).batch  # type: ignore
    t = env.episode_limit
    assert batch["entities"].shape == (2, t + 1, 8, N_FEATURES)
    assert batch["task_rewards"].shape == (2, t, 2)
    assert batch["entity2task"].shape == (2, t + 1, 8, 2)
    np.testing.assert_allclose(batch["task_rewards"].sum(-1), batch["reward"], atol=1e-4)
