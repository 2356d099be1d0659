"""The whole-sequence GRU equals ``nn.GRU``: outputs and every gradient, on both of its
implementations (the C gate kernels, and the torch/numpy fallback used without a compiler)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kaleibench.nn import native_gru
from kaleibench.nn.fused_gru import gru_sequence_fused
from kaleibench.nn.rnn_agent import GruAgent
from kaleibench.utils import native


@pytest.fixture(autouse=True, params=["native", "torch"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Every test runs on the C kernels and on the fallback (``KALEIBENCH_NATIVE=0``)."""
    monkeypatch.setenv(native.DISABLE_ENV, "1" if request.param == "native" else "0")
    native.load.cache_clear()
    if request.param == "native":
        if native.compiler() is None:
            pytest.skip("no C compiler on this machine: only the fallback can run")
        # with a compiler the kernels must build: a broken build fails here, never skips
        assert native_gru.available(), native.unavailable_reason("gru_kernels.c")
    else:
        assert not native_gru.available()
    yield request.param
    native.load.cache_clear()


def _reference(rnn: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """nn.GRU on time-major x (T, M, I) from a zero state."""
    seq = x.transpose(0, 1) if rnn.batch_first else x
    out, _ = rnn(seq)
    return out.transpose(0, 1) if rnn.batch_first else out


def _grads(fn, rnn: nn.GRU, x: torch.Tensor, weight: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    rnn.zero_grad()
    (fn(rnn, x) * weight).sum().backward()
    return [x.grad.clone()] + [p.grad.clone() for p in rnn.parameters()]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(("t_len", "m", "i_dim", "h_dim"),
                         [(1, 1, 1, 1), (7, 5, 4, 6), (26, 96, 64, 64), (5, 13, 7, 20),
                          (4, 7, 5, 48)])  # H = 20, 48: vector tiles and the portable loop
def test_outputs_and_gradients_match_nn_gru(batch_first: bool, t_len: int, m: int, i_dim: int,
                                            h_dim: int) -> None:
    gen = torch.Generator().manual_seed(t_len * 100 + m)
    rnn = nn.GRU(i_dim, h_dim, batch_first=batch_first)
    with torch.no_grad():
        for p in rnn.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / max(i_dim, h_dim) ** 0.5)
    x = torch.randn(t_len, m, i_dim, generator=gen)
    weight = torch.randn(t_len, m, h_dim, generator=gen)  # a non-trivial ∂L/∂h_t at every step
    torch.testing.assert_close(gru_sequence_fused(rnn, x), _reference(rnn, x), rtol=1e-5,
                               atol=2e-6 * t_len)  # float rounding, compounding over steps
    ref = _grads(_reference, rnn, x, weight)
    new = _grads(gru_sequence_fused, rnn, x, weight)
    names = ["x"] + [n for n, _ in rnn.named_parameters()]
    for name, a, b in zip(names, ref, new, strict=True):
        scale = max(1.0, float(a.abs().max()))
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * scale, msg=f"grad of {name}")


def test_no_grad_path_and_pooled_buffers_do_not_mix_up_calls() -> None:
    """Two forwards in flight (buffers pooled), backwards in reverse order, then a no-grad call."""
    torch.manual_seed(0)
    rnn = nn.GRU(3, 4)
    xs = [torch.randn(6, 5, 3), torch.randn(6, 5, 3) * 2]
    outs = [gru_sequence_fused(rnn, x.requires_grad_(True)) for x in xs]
    for out in reversed(outs):
        out.sum().backward()
    expected = [_grads(_reference, rnn, x, torch.ones(6, 5, 4))[0] for x in xs]
    for x, e in zip(xs, expected, strict=True):
        torch.testing.assert_close(x.grad, e, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(gru_sequence_fused(rnn, xs[1]), _reference(rnn, xs[1]),
                                   rtol=1e-5, atol=1e-5)


def test_weights_edited_in_place_before_backward_are_detected() -> None:
    """Like nn.GRU: a stale graph must not silently use updated weights."""
    rnn = nn.GRU(3, 4)
    out = gru_sequence_fused(rnn, torch.randn(5, 2, 3))
    with torch.no_grad():
        rnn.weight_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_input_without_grad_still_trains_the_weights() -> None:
    torch.manual_seed(1)
    rnn = nn.GRU(3, 4)
    gru_sequence_fused(rnn, torch.randn(5, 2, 3)).pow(2).sum().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in rnn.parameters())


def test_agent_unroll_equals_stepwise_acting() -> None:
    """The learner's whole-episode unroll computes what acting computes step by step."""
    torch.manual_seed(2)
    agent = GruAgent(input_dim=9, hidden_dim=8, n_actions=5, n_agents=3)
    inputs = torch.randn(4, 6, 3, 9)  # (B, T, N, I)
    h = agent.init_hidden(4)
    stepwise = []
    for t in range(6):
        q, h = agent(inputs[:, t], h)
        stepwise.append(q)
    torch.testing.assert_close(agent.unroll(inputs), torch.stack(stepwise, 1), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"num_layers": 2}, {"bidirectional": True}, {"bias": False}])
def test_unsupported_gru_configurations_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="one-layer"):
        gru_sequence_fused(nn.GRU(3, 4, **kwargs), torch.randn(2, 2, 3))


def test_float64_is_refused() -> None:
    with pytest.raises(TypeError, match="float32"):
        gru_sequence_fused(nn.GRU(3, 4).double(), torch.randn(2, 2, 3, dtype=torch.float64))
