"""QMIX parts: mixer monotonicity, TD targets, double-Q, target cadence, ε, buffer, updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import kaleibench
from kaleibench.algos import load_variant
from kaleibench.algos.base import EnvInfo
from kaleibench.algos.qmix import Qmix, QmixConfig
from kaleibench.losses import RunningMeanStd, double_q_next_values, masked_td_loss, td_targets
from kaleibench.nn.mixers import QMixer
from kaleibench.train.buffer import ReplayBuffer
from kaleibench.train.rollout import collect
from kaleibench.train.schedules import LinearSchedule


def test_mixer_is_monotone() -> None:
    torch.manual_seed(0)
    mixer = QMixer(n_agents=3, state_dim=7)
    q = torch.randn(64, 3, requires_grad=True)
    s = torch.randn(64, 7)
    grads = torch.autograd.grad(mixer(q, s).sum(), q)[0]  # (64, 3)
    assert (grads >= 0).all() and (grads > 0).any()


def test_td_targets_bootstrap_through_truncation_not_termination() -> None:
    """2 episodes × 3 steps, γ = 0.5: episode 0 is truncated at t=2, episode 1 terminates."""
    reward = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    terminated = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    next_q_tot = torch.tensor([[10.0, 20.0, 30.0], [10.0, 20.0, 30.0]])
    y = td_targets(reward, terminated, next_q_tot, gamma=0.5)
    assert y.tolist() == [[6.0, 12.0, 18.0], [6.0, 12.0, 3.0]]
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    q_tot = torch.tensor([[5.0, 12.0, 18.0], [6.0, 10.0, 99.0]])
    # errors: ep0 (-1, 0, 0), ep1 (0, -2, masked) -> (1 + 4) / 5
    assert masked_td_loss(q_tot, y, mask).item() == pytest.approx(1.0)


def test_double_q_uses_online_argmax_over_available_actions() -> None:
    """2 agents, 1 step, 3 actions; action 2 unavailable for agent 0 despite its high Q."""
    online = torch.tensor([[[[1.0, 3.0, 9.0], [5.0, 1.0, 0.0]]]])  # (1, 1, 2, 3)
    target = torch.tensor([[[[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]]])
    avail = torch.tensor([[[[True, True, False], [True, True, True]]]])
    values = double_q_next_values(online, target, avail)
    assert values.tolist() == [[[20.0, 40.0]]]  # agent 0 -> a=1, agent 1 -> a=0


def test_epsilon_schedule_values() -> None:
    eps = LinearSchedule(1.0, 0.05, 50_000)
    assert [eps(t) for t in (0, 10_000, 50_000, 10**6)] == pytest.approx([1.0, 0.81, 0.05, 0.05])


def test_running_mean_std_matches_numpy() -> None:
    rms, rng = RunningMeanStd(), np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=50) for _ in range(4)]
    for c in chunks:
        rms.update(torch.tensor(c))
    allx = np.concatenate(chunks)
    assert rms.mean == pytest.approx(allx.mean(), rel=1e-3)
    assert rms.var == pytest.approx(allx.var(), rel=1e-3)


def _learner(task: str = "mpe/spread-v0", **overrides: object) -> tuple[Qmix, object]:
    env = kaleibench.make(task, n_envs=4, seed=0)
    cfg = QmixConfig(batch_size=4, buffer_size=16, **overrides)  # type: ignore[arg-type]
    return Qmix(cfg, EnvInfo.of(env), seed=0), env


def test_last_step_reward_reaches_the_buffer() -> None:
    learner, env = _learner()
    ro = collect(env, learner, t_env=0, explore=True, seeds=[1, 2, 3, 4])
    batch = ro.batch
    assert batch["filled"].all() and batch["truncated"][:, -1].all()
    assert not batch["terminated"].any()
    assert (batch["reward"][:, -1] != 0).all()  # spread's distance reward is never exactly 0
    np.testing.assert_allclose(batch["reward"].sum(1).numpy(), ro.returns, rtol=1e-5)
    buf = ReplayBuffer(8)
    buf.insert(batch)
    assert torch.equal(buf.storage["reward"][:4, -1], batch["reward"][:, -1])


def test_timeout_is_terminal_switch_changes_only_the_last_target() -> None:
    learner, env = _learner(standardise_rewards=False)  # default: as the task says (terminal)
    assert learner.cfg.timeout_is_terminal is True
    batch = collect(env, learner, 0, explore=True, seeds=[1, 2, 3, 4]).batch

    class Const(nn.Module):
        def forward(self, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return torch.full(q.shape[:-1], 10.0)

        def hyper(self, s: torch.Tensor) -> torch.Tensor:  # the target mixer's split form
            return s[..., :1]

        def mix(self, q: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            return torch.full(q.shape[:-1], 10.0)

    learner.target_mixer = Const()
    learner.mixer = Const()
    _, stats_term = learner.td_loss(batch)
    learner.cfg = QmixConfig(batch_size=4, buffer_size=16, standardise_rewards=False,
                             timeout_is_terminal=False)
    _, stats_boot = learner.td_loss(batch)
    t = batch["reward"].shape[1]
    # mean target differs by γ·10 on exactly one of T steps (the last, where the limit is hit)
    assert stats_boot["target_mean"] - stats_term["target_mean"] == pytest.approx(
        0.99 * 10.0 / t, rel=1e-4)


def test_every_mpe_task_declares_its_time_limit_part_of_the_task() -> None:
    from kaleibench.envs import task_spec, tasks

    ids = tasks.names()
    assert len(ids) >= 7
    for task_id in ids:
        assert task_spec(task_id).time_limit_is_task is True, task_id
        assert task_spec(task_id).to_json()["time_limit_is_task"] is True


@pytest.mark.parametrize("variant", ["qmix", "qmix-1r3", "kalei-qmix", "alma-alloc"])
def test_time_limit_semantics_resolved_per_run_recorded_and_hashed(variant: str) -> None:
    from dataclasses import replace

    from kaleibench.train.loop import spec_json
    from kaleibench.train.spec import RunSpec

    v = load_variant(variant)
    assert v.config.timeout_is_terminal is None  # the variant leaves it to the task
    spec = RunSpec(suite="t", variant=v, task="mpe/spread-v0", seed=0, t_max=100)
    assert spec.variant.config.timeout_is_terminal is True
    assert spec_json(spec)["config"]["timeout_is_terminal"] is True
    forced = RunSpec(suite="t", variant=replace(v, config=replace(
        v.config, timeout_is_terminal=False)), task="mpe/spread-v0", seed=0, t_max=100)
    assert forced.variant.config.timeout_is_terminal is False
    assert forced.config_hash != spec.config_hash


def test_update_is_finite_changes_params_and_syncs_targets_on_cadence() -> None:
    learner, env = _learner(target_update_interval=3)
    before = [p.detach().clone() for p in learner.params]
    for _ in range(2):
        stats = learner.train_on(collect(env, learner, 0, True).batch, t_env=100)
    assert learner.n_updates == 8 and np.isfinite(stats["loss_td"])
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.params, strict=True))
    # after 8 updates the last sync was at update 6: targets equal the params of update 6,
    # not the current ones
    learner.train_on(collect(env, learner, 0, True).batch, t_env=200)  # updates 9..12
    assert learner.n_updates == 12
    # sync happened at 12 -> equal now
    for p, q in zip(learner.agent.parameters(), learner.target_agent.parameters(), strict=True):
        assert torch.equal(p, q)
    learner.update(300)  # update 13: online moves, target stays
    assert any(not torch.equal(p, q) for p, q in zip(
        learner.agent.parameters(), learner.target_agent.parameters(), strict=True))


def test_one_update_per_episode_whatever_n_envs() -> None:
    learner, env = _learner()
    learner.train_on(collect(env, learner, 0, True).batch, 0)  # 4 episodes -> 4 updates
    assert learner.n_updates == 4


def test_greedy_act_respects_available_actions() -> None:
    learner, env = _learner("mpe/speaker-listener-v0")
    ts = env.reset([1, 2, 3, 4])
    for explore in (True, False):
        acts, _ = learner.act(ts, learner.init_hidden(4), 0, explore)
        assert (acts[:, 0] < 3).all()  # speaker has 3 actions


@pytest.mark.parametrize("name", ["qmix", "qmix-1r3", "kalei-qmix"])
def test_every_learning_variant_updates(name: str) -> None:
    env = kaleibench.make("mpe/spread-v0", n_envs=4, seed=0)
    variant = load_variant(name)
    from dataclasses import replace

    variant = replace(variant, config=replace(variant.config, batch_size=4, buffer_size=8))
    algo = variant.build(EnvInfo.of(env, 1000), seed=0)
    stats = algo.train_on(collect(env, algo, 0, True).batch, 100)
    assert np.isfinite(stats["loss"]) and stats["n_updates"] == 4.0


@pytest.mark.parametrize("agent", ["gru", "gru-1r3", "kalei-1r3"])
def test_sequence_unroll_equals_step_by_step(agent: str) -> None:
    learner, env = _learner(agent=agent)
    batch = collect(env, learner, 0, explore=True, seeds=[1, 2, 3, 4]).batch
    fused = learner.unroll(learner.agent, batch)  # (B, T+1, N, A)
    inputs = learner.build_inputs(batch["obs"], torch.cat(
        [torch.full_like(batch["actions"][:, :1], -1), batch["actions"]], dim=1))
    h, steps = learner.agent.init_hidden(4), []
    for t in range(inputs.shape[1]):
        q, h = learner.agent(inputs[:, t], h)
        steps.append(q)
    torch.testing.assert_close(fused, torch.stack(steps, 1), rtol=1e-5, atol=1e-5)


def test_mlp_agent_unroll_matches_steps() -> None:
    learner, env = _learner(agent="mlp")
    batch = collect(env, learner, 0, explore=True, seeds=[1, 2, 3, 4]).batch
    fused = learner.unroll(learner.agent, batch)
    h = learner.agent.init_hidden(4)
    inputs = learner.build_inputs(batch["obs"], torch.cat(
        [torch.full_like(batch["actions"][:, :1], -1), batch["actions"]], dim=1))
    steps = torch.stack([learner.agent(inputs[:, t], h)[0] for t in range(inputs.shape[1])], 1)
    torch.testing.assert_close(fused, steps)


def test_time_aware_adds_only_the_remaining_time_input() -> None:
    """Agent inputs and mixer state gain exactly one column, (T − t)/T; nothing else moves."""
    plain, env = _learner()
    aware, _ = _learner(time_aware=True)
    assert aware.input_dim == plain.input_dim + 1
    batch = collect(env, plain, 0, explore=True, seeds=[1, 2, 3, 4]).batch
    obs, actions = batch["obs"], batch["actions"]
    last = torch.cat([torch.full_like(actions[:, :1], -1), actions], dim=1)
    t = torch.arange(obs.shape[1]).view(1, -1, 1)
    x_plain, x_aware = plain.build_inputs(obs, last, t), aware.build_inputs(obs, last, t)
    assert torch.equal(x_aware[..., :-1], x_plain)
    expected = (25 - torch.arange(26).float()) / 25  # 1 at the start, 0 after the last step
    assert torch.allclose(x_aware[0, :, 0, -1], expected)
    s_plain, s_aware = plain.mixer_state(batch), aware.mixer_state(batch)
    assert torch.equal(s_aware[..., :-1], s_plain) and torch.allclose(s_aware[0, :, -1], expected)
    assert aware.mixer.hyper_b1.in_features == plain.mixer.hyper_b1.in_features + 1


def test_time_aware_acting_sees_the_same_inputs_as_training() -> None:
    """Step-by-step acting and the whole-episode unroll give the same Q-values at every t."""
    learner, env = _learner(time_aware=True)
    seen: list[torch.Tensor] = []
    hook = learner.agent.register_forward_hook(lambda m, i, out: seen.append(out[0].detach()))
    batch = collect(env, learner, 0, explore=False, seeds=[1, 2, 3, 4]).batch
    hook.remove()
    assert len(seen) == 25
    q_unroll = learner.unroll(learner.agent, batch)  # (B, T+1, N, A)
    for t, q_step in enumerate(seen):
        torch.testing.assert_close(q_step, q_unroll[:, t], rtol=1e-5, atol=1e-5)


def test_return_bound_known_answers() -> None:
    from kaleibench.losses import return_bound

    assert return_bound(1.0, 0.5, 2) == pytest.approx(1.5)  # 1 + 0.5
    assert return_bound(2.0, 0.5, None) == pytest.approx(4.0)  # 2 / (1 − 0.5)
    assert return_bound(1.0, 0.99, 25) == pytest.approx((1 - 0.99**25) / 0.01)


def test_divergence_monitor_is_logged_with_the_terminal_horizon() -> None:
    learner, env = _learner()
    learner.train_on(collect(env, learner, 0, True).batch, t_env=0)
    stats = learner.train_on(collect(env, learner, 0, True).batch, t_env=100)
    for key in ("target_max_abs", "target_bound", "reward_mu", "reward_sigma", "q_tot_mean"):
        assert np.isfinite(stats[key]), key
    # terminal 25-step horizon: the bound is below r_max / (1 − γ) by the factor 1 − γ^25
    assert stats["target_bound"] < 25 * 10  # standardised |r| stays below ~10 here


def test_interval_stats_means_sums_and_last_values() -> None:
    from kaleibench.train.metrics import IntervalStats

    store: dict[str, dict[str, float]] = {}
    acc = IntervalStats(store)
    acc.add({"loss": 1.0, "n_reset": 2.0, "epsilon": 0.9})
    acc.add({"loss": 3.0, "epsilon": 0.8})
    assert IntervalStats(store).summary() == {"loss": 2.0, "n_reset": 2.0, "epsilon": 0.8}
    acc.clear()
    assert not IntervalStats(store).summary()
