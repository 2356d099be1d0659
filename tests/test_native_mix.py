"""QMIX's mixer with its mixing arithmetic in C (kaleibench/nn/native_mix.py, mix_kernels.c).

The C path must compute the function of the torch path (and of a float64 reference) and its
every gradient; the target mixer's split (hyper, then mix) must equal the online forward."""

from __future__ import annotations

import pytest
import torch

from kaleibench.nn import native_mix
from kaleibench.nn.mixers import QMixer
from kaleibench.utils import native

needs_kernels = pytest.mark.skipif(not native_mix.available(32),
                                   reason="no C compiler: the torch path runs")


def _mixer(seed: int = 0, n: int = 3, state: int = 10, embed: int = 8) -> QMixer:
    torch.manual_seed(seed)
    mixer = QMixer(n, state, embed_dim=embed, hypernet_embed=12)
    with torch.no_grad():  # biases spread wide: ReLU/|·|/ELU inputs on both sides of 0
        for p in mixer.parameters():
            p.mul_(3.0)
    return mixer


def _grads(mixer: QMixer, q: torch.Tensor, s: torch.Tensor, g: torch.Tensor,
           native_on: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, ...]:
    with monkeypatch.context() as m:
        if not native_on:
            m.setattr(native_mix, "available", lambda embed_dim: False)
        mixer.zero_grad()
        q = q.clone().requires_grad_()
        y = mixer(q, s)
        y.backward(g)
    assert q.grad is not None
    return (y.detach(), q.grad, *(p.grad.clone() for p in mixer.parameters()
                                  if p.grad is not None))  # fmt: skip


@needs_kernels
def test_the_c_mixer_computes_the_torch_mixer_and_its_gradients(
        monkeypatch: pytest.MonkeyPatch) -> None:
    mixer = _mixer()
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(4, 7, 3, generator=gen) * 3
    s = torch.randn(4, 7, 10, generator=gen)
    g = torch.randn(4, 7, generator=gen)
    c_path = _grads(mixer, q, s, g, True, monkeypatch)
    torch_path = _grads(mixer, q, s, g, False, monkeypatch)
    assert len(c_path) == len(torch_path) == 2 + len(list(mixer.parameters()))
    for a, b in zip(c_path, torch_path, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # and a float64 copy of the torch path (the exact function, to float64 rounding)
    exact = _mixer().double()
    with monkeypatch.context() as m:
        m.setattr(native_mix, "available", lambda embed_dim: False)
        q64 = q.double().requires_grad_()
        exact(q64, s.double()).backward(g.double())
    torch.testing.assert_close(c_path[0], exact(q.double(), s.double()).float(), rtol=2e-6,
                               atol=2e-5)  # fmt: skip
    assert q64.grad is not None
    torch.testing.assert_close(c_path[1], q64.grad.float(), rtol=2e-6, atol=2e-5)
    for a, p in zip(c_path[2:], exact.parameters(), strict=True):
        assert p.grad is not None
        torch.testing.assert_close(a, p.grad.float(), rtol=1e-5, atol=1e-4)


@needs_kernels
def test_the_inputs_cover_every_branch() -> None:
    """The comparison above is only worth something if the ReLUs, |·| and ELU see both signs."""
    mixer = _mixer()
    s = torch.randn(4, 7, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first = mixer._first_layers()
        pre = torch.addmm(torch.cat(first[4:]), s.view(-1, 10), torch.cat(first[:4]).t())
        w1 = mixer.hyper_w1(s)
        q = torch.randn(4, 7, 3, generator=torch.Generator().manual_seed(1)) * 3
        packed = mixer.hyper(s).view(-1, mixer.n_weights)
        a = (q.view(-1, 3, 1) * packed[:, :24].view(-1, 3, 8)).sum(1) + packed[:, 24:32]
    for x in (pre, w1, a):
        assert (x > 0).any() and (x < 0).any()


@needs_kernels
def test_target_mix_of_hyper_is_the_forward_pass_bit_for_bit() -> None:
    mixer = _mixer()
    gen = torch.Generator().manual_seed(2)
    q, s = torch.randn(5, 6, 3, generator=gen), torch.randn(5, 6, 10, generator=gen)
    with torch.no_grad():
        assert torch.equal(mixer.mix(q, mixer.hyper(s)), mixer(q, s))


@needs_kernels
@pytest.mark.parametrize("absolute", [False, True])
def test_hypernetworks_in_one_call_are_the_product_calls_bit_for_bit(absolute: bool) -> None:
    """``native_mix.hypernetworks`` = linear_stacked, the ReLU (keeping -0.0), three ``linear``
    calls and, for the target mixer's packed weights, |·| and the copy of b1: the same floats,
    also from a strided state and into column slices of a packed array."""
    from kaleibench.nn.products import linear, linear_stacked
    mixer = QMixer(3, 54, embed_dim=32, hypernet_embed=64)  # spread's widths: masked tails
    gen = torch.Generator().manual_seed(4)
    s = torch.randn(97, 60, generator=gen)[:, 3:57]  # a column slice, rows 60 floats apart
    s[0, :] = -0.0  # rows whose hidden pre-activations are exactly the biases
    params = mixer.node_parameters()
    with torch.no_grad():
        pre_ref = linear_stacked(s.contiguous(), params[0:4], params[4:8])
        pre_ref[:, :160].clamp_min_(0.0)
        h = pre_ref[:, :160].split([64, 64, 32], dim=1)
        outs = [linear(x, params[8 + 2 * i], params[9 + 2 * i]) for i, x in enumerate(h)]
        pre, packed = torch.empty(97, 192), torch.full((97, 161), float("nan"))
        if absolute:
            native_mix.hypernetworks(s, params, pre, packed[:, :96], packed[:, 128:160],
                                     packed[:, 160:], b1=packed[:, 96:128])
            expected = torch.cat([outs[0].abs(), pre_ref[:, 160:], outs[1].abs(), outs[2]], 1)
            assert torch.equal(packed, expected)
        else:
            w1, wf, v = torch.empty(97, 96), torch.empty(97, 32), torch.empty(97, 1)
            native_mix.hypernetworks(s, params, pre, w1, wf, v)
            for got, want in zip((w1, wf, v), outs, strict=True):
                assert torch.equal(got, want)
        assert torch.equal(pre, pre_ref)
        assert torch.equal(torch.signbit(pre), torch.signbit(pre_ref))
    with pytest.raises(ValueError, match="unexpected shape"):
        native_mix.hypernetworks(s, params, pre[:, :100], packed[:, :96], packed[:, 128:160],
                                 packed[:, 160:])


@needs_kernels
def test_backward_in_one_call_is_the_product_calls_bit_for_bit() -> None:
    """``native_mix.backward`` = the mixing step's C backward pass, the second layers' input
    gradients (``matmul``), the ReLUs' mask and ``weight_grad`` per layer, called one by one."""
    from kaleibench.nn.products import matmul, weight_grad
    mixer = QMixer(3, 54, embed_dim=32, hypernet_embed=64)
    gen = torch.Generator().manual_seed(6)
    q, s, gy = (torch.randn(203, 3, generator=gen), torch.randn(203, 54, generator=gen),
                torch.randn(203, generator=gen))
    params = tuple(mixer.node_parameters())
    with torch.no_grad():
        _, saved = native_mix.forward_saving(q, s, params)
        d_q, grads = native_mix.backward(saved, gy)
        _, _, pre, w1, wf, a, w_w1, w_wf, w_v = saved
        lib = native_mix.kernels()
        d_pre, d_w1, d_wf, d_q_ref = (torch.empty(203, 192), torch.empty(203, 96),
                                      torch.empty(203, 32), torch.empty(203, 3))
        lib.qmix_mix_bwd(gy.data_ptr(), q.data_ptr(), w1.data_ptr(), 96, wf.data_ptr(), 32,
                         a.data_ptr(), d_w1.data_ptr(), d_pre[:, 160:].data_ptr(), 192,
                         d_wf.data_ptr(), d_q_ref.data_ptr(), 203, 3, 32)
        d_h = torch.cat([matmul(d_w1, w_w1), matmul(d_wf, w_wf), matmul(gy.view(-1, 1), w_v)], 1)
        d_pre[:, :160] = torch.where(pre[:, :160] > 0, d_h, 0.0)
        h = pre[:, :160].split([64, 64, 32], dim=1)
        first = weight_grad(d_pre, s, bias=True)
        seconds = [weight_grad(d, x, bias=True) for d, x in zip(
            (d_w1, d_wf, gy.view(-1, 1)), h, strict=True)]
    assert d_q is not None and torch.equal(d_q, d_q_ref)
    widths = [64, 64, 32, 32]
    assert first[1] is not None
    expected = (*first[0].split(widths), *first[1].split(widths),
                *(t for pair in seconds for t in pair))
    assert len(grads) == len(expected) == 14
    for got, want in zip(grads, expected, strict=True):
        assert want is not None and torch.equal(got, want)


@needs_kernels
def test_elu_of_the_kernel_is_accurate_near_zero_and_far_out() -> None:
    """E = 1, w1 = 0, wf = 1, v = 0: Q_tot = ELU(b1), so the kernel's expm1 is seen directly
    (exp(a) − 1 would lose every digit for tiny |a|)."""
    a = -torch.logspace(-8, 1.9, 400)  # −1e-8 ... −79
    a = torch.cat([a, torch.tensor([0.0, 1e-7, 3.5, -87.0, -100.0])])
    m = len(a)
    zeros, ones = torch.zeros(m, 1), torch.ones(m, 1)
    y, saved = native_mix.mix(torch.ones(m, 1), zeros, a.view(m, 1), ones, zeros, save=True)
    expected = torch.where(a > 0, a.double(), torch.expm1(a.double()))
    torch.testing.assert_close(y.double(), expected, rtol=4e-7, atol=0.0)
    assert saved is not None and torch.equal(saved.view(-1), a)


@needs_kernels
def test_the_c_mixer_keeps_the_state_free_of_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    mixer = _mixer()
    q = torch.randn(2, 3, 3, requires_grad=True)
    s = torch.randn(2, 3, 10, requires_grad=True)
    mixer(q, s).sum().backward()
    assert s.grad is None and q.grad is not None


def test_without_kernels_the_torch_path_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    native.load.cache_clear()
    try:
        assert not native_mix.available(8)
        mixer = _mixer()
        q, s = torch.randn(2, 3, 3, requires_grad=True), torch.randn(2, 3, 10)
        y = mixer(q, s)
        assert y.grad_fn is not None and "NativeQMix" not in type(y.grad_fn).__name__
        y.sum().backward()
        assert q.grad is not None and torch.isfinite(q.grad).all()
    finally:
        monkeypatch.delenv(native.DISABLE_ENV)
        native.load.cache_clear()


def test_node_parameters_are_the_layers_parameters() -> None:
    """The mixer node's parameter list, read from the layers' dicts, is the layers' own."""
    mixer = _mixer()
    layers = (mixer.hyper_w1[0], mixer.hyper_wf[0], mixer.value[0], mixer.hyper_b1)
    seconds = (mixer.hyper_w1[2], mixer.hyper_wf[2], mixer.value[2])
    expected = [*(m.weight for m in layers), *(m.bias for m in layers),
                *(t for m in seconds for t in (m.weight, m.bias))]
    assert all(a is b for a, b in zip(mixer.node_parameters(), expected, strict=True))
