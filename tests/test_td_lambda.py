"""TD(λ) targets for QMIX: known answers, λ = 0 / λ = 1 limits, config and learner wiring."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import kaleibench
from kaleibench.algos import qmix as qmix_module
from kaleibench.algos.base import EnvInfo
from kaleibench.algos.qmix import Qmix, QmixConfig
from kaleibench.losses import lambda_targets, td_targets
from kaleibench.train.rollout import collect

# 2 episodes × 3 steps, γ = 0.5. Episode 0 runs all 3 steps and is truncated (no termination);
# episode 1 terminates at t=1 and t=2 is padding (its numbers must not leak into the targets).
REWARD = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 77.0]])
TERMINATED = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
FILLED = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
NEXT_Q = torch.tensor([[10.0, 20.0, 30.0], [10.0, 20.0, 99.0]])  # Q_tot⁻(s_{t+1})


def test_lambda_targets_known_answer() -> None:
    """λ = 0.6 by hand (y_t = r_t + γ(1 − d_t)[(1 − λ)Q⁻_t + λ y_{t+1}]):

    ep 0: y2 = 3 + .5·30 = 18 (truncated: bootstrap);  y1 = 2 + .5(.4·20 + .6·18) = 11.4;
          y0 = 1 + .5(.4·10 + .6·11.4) = 6.42.
    ep 1: y1 = 2 (terminated);  y0 = 1 + .5(.4·10 + .6·2) = 3.6.
    """
    y = lambda_targets(REWARD, TERMINATED, FILLED, NEXT_Q, gamma=0.5, lam=0.6)
    assert y.shape == (2, 3)
    assert y[0].tolist() == pytest.approx([6.42, 11.4, 18.0])
    assert y[1, :2].tolist() == pytest.approx([3.6, 2.0])


def test_lambda_targets_truncated_short_episode_bootstraps_at_its_last_filled_step() -> None:
    """An episode truncated after 2 of 3 steps: y1 = 2 + .5·20 = 12, y0 = 1 + .5(.4·10 + .6·12)."""
    reward = torch.tensor([[1.0, 2.0, 50.0]])
    terminated = torch.zeros(1, 3)
    filled = torch.tensor([[1.0, 1.0, 0.0]])
    next_q = torch.tensor([[10.0, 20.0, -40.0]])
    y = lambda_targets(reward, terminated, filled, next_q, gamma=0.5, lam=0.6)
    assert y[0, :2].tolist() == pytest.approx([6.6, 12.0])


def test_lambda_zero_is_exactly_td_targets() -> None:
    gen = torch.Generator().manual_seed(0)
    reward = torch.randn(5, 25, generator=gen)
    terminated = torch.zeros(5, 25)
    terminated[1, 10] = 1.0
    filled = torch.ones(5, 25)
    filled[1, 11:] = 0.0
    next_q = torch.randn(5, 25, generator=gen)
    y0 = lambda_targets(reward, terminated, filled, next_q, gamma=0.99, lam=0.0)
    assert torch.equal(y0, td_targets(reward, terminated, next_q, gamma=0.99))
    # and on the small batch, by hand: r + γ(1 − d)Q⁻
    y = lambda_targets(REWARD, TERMINATED, FILLED, NEXT_Q, gamma=0.5, lam=0.0)
    assert y[0].tolist() == [6.0, 12.0, 18.0]
    assert y[1, :2].tolist() == [6.0, 2.0]


def test_lambda_one_is_monte_carlo_return_plus_bootstrapped_tail() -> None:
    y = lambda_targets(REWARD, TERMINATED, FILLED, NEXT_Q, gamma=0.5, lam=1.0)
    # ep 0 (truncated): Σ γ^k r + γ^3 Q⁻(s_3) -> 1 + 1 + .75 + .125·30 = 6.5; 2 + 1.5 + 7.5 = 11
    assert y[0].tolist() == pytest.approx([6.5, 11.0, 18.0])
    # ep 1 (terminated at t=1): pure discounted return, no bootstrap
    assert y[1, :2].tolist() == pytest.approx([2.0, 2.0])
    # intermediate λ lies strictly between the 1-step and the MC target here
    y6 = lambda_targets(REWARD, TERMINATED, FILLED, NEXT_Q, gamma=0.5, lam=0.6)
    assert 6.0 < y6[0, 0].item() < 6.5


def test_lambda_targets_are_detached() -> None:
    next_q = NEXT_Q.clone().requires_grad_(True)
    y = lambda_targets(REWARD, TERMINATED, FILLED, next_q, gamma=0.5, lam=0.6)
    assert not y.requires_grad


@pytest.mark.parametrize("bad", [-0.1, 1.01])
def test_td_lambda_config_is_validated(bad: float) -> None:
    with pytest.raises(ValueError, match="td_lambda"):
        QmixConfig(td_lambda=bad)
    assert QmixConfig().td_lambda == 0.0
    assert QmixConfig(td_lambda=1.0).td_lambda == 1.0


@pytest.mark.parametrize(("lam", "calls"), [(0.0, 0), (0.6, 1)])
def test_learner_uses_lambda_targets_only_when_td_lambda_positive(
        monkeypatch: pytest.MonkeyPatch, lam: float, calls: int) -> None:
    seen: list[float] = []
    real = qmix_module.lambda_targets

    def spy(*args: Any) -> torch.Tensor:
        seen.append(args[-1])
        return real(*args)

    monkeypatch.setattr(qmix_module, "lambda_targets", spy)
    env = kaleibench.make("mpe/spread-v0", n_envs=4, seed=0)
    learner = Qmix(QmixConfig(batch_size=4, buffer_size=16, td_lambda=lam), EnvInfo.of(env), 0)
    ro = collect(env, learner, t_env=0, explore=True, seeds=[1, 2, 3, 4])
    learner.buffer.insert(ro.batch)
    loss, stats = learner.td_loss(learner.buffer.sample(4, learner.sample_gen))
    assert seen == [lam] * calls
    assert torch.isfinite(loss) and set(stats) >= {"loss_td", "target_mean"}
