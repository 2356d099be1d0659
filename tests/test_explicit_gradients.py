"""QMIX's update without autograd's engine gives autograd's floats.

``Qmix.td_loss_and_gradients`` calls the hand-written backward passes of the loss, the mixer,
the taken actions and the agent in turn; ``td_loss(batch)[0].backward()`` runs the same passes
through autograd. Loss, statistics, every gradient and the parameters after several updates
must be bit-identical.
"""

from __future__ import annotations

import copy

import pytest
import torch

import kaleibench
from kaleibench.algos import load_variant
from kaleibench.algos.base import EnvInfo
from kaleibench.algos.qmix import Qmix
from kaleibench.train.rollout import collect


def learner(variant: str) -> Qmix:
    env = kaleibench.make("mpe/spread-v0", n_envs=8, seed=0)
    algo = load_variant(variant).build(EnvInfo.of(env, 10**6), seed=0)
    assert isinstance(algo, Qmix)
    for _ in range(5):
        algo.train_on(collect(env, algo, 0, explore=True).batch, 1000)
    return algo


@pytest.fixture(scope="module", params=["qmix", "qmix-lambda"])
def trained(request: pytest.FixtureRequest) -> Qmix:
    algo = learner(request.param)
    if not algo.explicit_gradients():
        pytest.skip("the C kernels are unavailable: only the autograd path runs")
    return algo


def test_loss_statistics_and_gradients_equal_autograd(trained: Qmix) -> None:
    explicit, auto = copy.deepcopy(trained), copy.deepcopy(trained)
    batch = trained.buffer.sample(32, torch.Generator().manual_seed(4))
    loss, stats, grads = explicit.td_loss_and_gradients(batch)
    auto_loss, auto_stats = auto.td_loss(batch)
    auto_loss.backward()
    assert loss == float(auto_loss.detach())
    assert stats == auto_stats
    index = {id(p): k for k, p in enumerate(explicit.params)}
    assert sorted(index[id(p)] for p, _ in grads) == list(range(len(auto.params)))
    for param, grad in grads:  # every parameter once, its gradient equal to autograd's
        twin = auto.params[index[id(param)]]
        assert twin.grad is not None and torch.equal(grad, twin.grad), index[id(param)]


def test_updates_equal_autograd(trained: Qmix, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, auto = copy.deepcopy(trained), copy.deepcopy(trained)
    monkeypatch.setattr(auto, "explicit_gradients", lambda: False)
    for _ in range(3):
        s1, s2 = explicit.update(1000), auto.update(1000)
        assert s1 == s2
    for p1, p2 in zip(explicit.params, auto.params, strict=True):
        assert torch.equal(p1, p2)


def test_only_the_plain_gru_learner_takes_the_explicit_path() -> None:
    assert not learner("kalei-qmix").explicit_gradients()  # a regulariser: autograd
    assert not learner("qmix-1r3").explicit_gradients()  # another agent network
