"""The learner's clip and Adam step give the same floats as torch's own functions."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kaleibench.train.optim import adam_step, clip_grad_norm


def _grads(scale: float) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = ((64, 21), (64,), (192, 64), (5,))
    return [torch.randn(shape, generator=gen) * scale for shape in shapes]


@pytest.mark.parametrize("scale", [1e-3, 10.0])  # the norm below and far above the bound
def test_clip_equals_torch_clip_grad_norm(scale: float) -> None:
    ours, theirs = _grads(scale), _grads(scale)
    params = [nn.Parameter(torch.zeros_like(g)) for g in theirs]
    for p, g in zip(params, theirs, strict=True):
        p.grad = g
    expected = nn.utils.clip_grad_norm_(params, 10.0, foreach=True)
    assert clip_grad_norm(ours, 10.0) == float(expected)
    for a, p in zip(ours, params, strict=True):
        assert torch.equal(a, p.grad)
    assert (float(expected) > 10.0) == (scale == 10.0)


def _twins(fused: bool) -> tuple[nn.Module, nn.Module, torch.optim.Adam, torch.optim.Adam]:
    """A small network and its copy, each with its own Adam."""
    net = nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 3))
    twin = copy.deepcopy(net)
    return (net, twin, torch.optim.Adam(net.parameters(), lr=5e-4, fused=fused),
            torch.optim.Adam(twin.parameters(), lr=5e-4, fused=fused))


def _step_both(net: nn.Module, twin: nn.Module, opt: torch.optim.Adam,
               ref: torch.optim.Adam, x: torch.Tensor) -> None:
    """One step on the same batch: ``adam_step`` for ``net``, torch's own for ``twin``."""
    for model, optimiser, ours in ((net, opt, True), (twin, ref, False)):
        optimiser.zero_grad(set_to_none=True)
        model(x).pow(2).mean().backward()
        if ours:
            adam_step(optimiser)
        else:
            optimiser.step()


def _assert_same(net: nn.Module, twin: nn.Module, opt: torch.optim.Adam,
                 ref: torch.optim.Adam) -> None:
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], ref.state[q][key])


@pytest.mark.parametrize("fused", [True, False])
def test_adam_step_equals_adam_step(fused: bool) -> None:
    """Bit for bit over several steps; the unfused configuration takes optimiser.step()."""
    net, twin, opt, ref = _twins(fused)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        _step_both(net, twin, opt, ref, torch.randn(32, 7, generator=gen))
    _assert_same(net, twin, opt, ref)


def test_adam_step_counts_in_one_tensor_and_survives_a_state_reload() -> None:
    """The step counters become views of one tensor (one add per step); a state dict loaded
    mid-run (new counter tensors) is picked up, and the run stays bit for bit torch's."""
    net, twin, opt, ref = _twins(True)
    gen = torch.Generator().manual_seed(2)
    for i in range(6):
        if i == 3:  # a resumed run: the optimiser's state replaced by a loaded copy
            opt.load_state_dict(copy.deepcopy(ref.state_dict()))
        _step_both(net, twin, opt, ref, torch.randn(16, 7, generator=gen))
    counters = [opt.state[p]["step"] for p in net.parameters()]
    assert len({c.untyped_storage().data_ptr() for c in counters}) == 1  # one tensor's views
    assert [float(c) for c in counters] == [6.0] * 4
    _assert_same(net, twin, opt, ref)


def test_clip_coefficient_is_torchs_float32_arithmetic() -> None:
    """The clip factor computed on float32 scalars equals torch's tensor arithmetic
    ``clamp(max_norm / (total + 1e-6), max=1.0)`` bit for bit, over norms of every size."""
    from kaleibench.train.optim import clip_coefficient
    gen = torch.Generator().manual_seed(7)
    totals = torch.cat([torch.rand(20000, generator=gen) * 20.0,
                        torch.exp(torch.randn(20000, generator=gen) * 6.0),
                        torch.tensor([0.0, 1e-6, 9.99999, 10.0, 10.00001, 1e30, float("inf")])])
    for max_norm in (10.0, 0.5, 3.3, 3e38):  # the last: products beyond float32, inf
        expected = torch.clamp(max_norm / (totals + 1e-6), max=1.0)
        ours = torch.tensor([clip_coefficient(float(t), max_norm) for t in totals])
        assert torch.equal(ours, expected), max_norm


def test_adam_step_with_given_gradients_equals_the_grad_attribute_path() -> None:
    """Gradients handed over as lists give the same step as the same gradients in ``.grad``
    (and, once the state exists, the parameters' ``.grad`` stays unset), for the fused step and
    for the fallback."""
    for fused in (True, False):
        net = nn.Linear(5, 3)
        twin = copy.deepcopy(net)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2, fused=fused)
        ref = torch.optim.Adam(twin.parameters(), lr=1e-2, fused=fused)
        gen = torch.Generator().manual_seed(9)
        for _ in range(3):
            grads = [torch.randn(p.shape, generator=gen) for p in net.parameters()]
            for p, g in zip(twin.parameters(), grads, strict=True):
                p.grad = g.clone()
            adam_step(ref)
            net.zero_grad(set_to_none=True)  # as the learner clears them before an update
            adam_step(opt, list(net.parameters()), grads)
            if fused and opt.state[net.weight]["step"] > 1:  # the first step is torch's own
                assert all(p.grad is None for p in net.parameters())
        for p, q in zip(net.parameters(), twin.parameters(), strict=True):
            assert torch.equal(p, q)
