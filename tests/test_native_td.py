"""The Q-learning loss's fused steps give the floats of the torch operations they replace.

``double_q_next_values`` (C selection), ``taken_action_values`` (one autograd node) and
``masked_td_loss`` (one node, closed-form gradient) must be bit-identical to the plain torch
expressions, values and gradients; the C statistics must equal torch's to float tolerance.
"""

from __future__ import annotations

import pytest
import torch

from kaleibench.algos.qmix import Qmix
from kaleibench.losses import (
    UNAVAILABLE,
    double_q_next_values,
    masked_td_loss,
    native_td,
    taken_action_values,
)

needs_c = pytest.mark.skipif(native_td.kernels() is None, reason="C kernels unavailable")


def bits(a: torch.Tensor) -> torch.Tensor:
    """The float32 bit patterns (tells -0.0 from 0.0, compares NaN with NaN)."""
    return a.contiguous().view(torch.int32)


def plain_double_q(q_on: torch.Tensor, q_tg: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    best = q_on.masked_fill(~avail, UNAVAILABLE).argmax(dim=-1, keepdim=True)
    return q_tg.gather(-1, best).squeeze(-1)


def time_major_view(shape: tuple[int, ...], gen: torch.Generator, ties: bool) -> torch.Tensor:
    """A (B, T, N, A) view of (T, B, N, A) memory, like the learner's unrolled Q-values."""
    b, t, n, a = shape
    x = (torch.randint(-2, 3, (t, b, n, a), generator=gen).float() if ties
         else torch.randn(t, b, n, a, generator=gen))
    return x.transpose(0, 1)


@needs_c
@pytest.mark.parametrize("ties", [False, True])
def test_double_q_select_equals_masked_argmax(ties: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    shape = (7, 9, 3, 5)
    q_on = time_major_view(shape, gen, ties)
    q_tg = torch.randn(*shape, generator=gen)
    avail = torch.rand(*shape, generator=gen) < 0.6
    avail[0, 0, 0] = False  # nothing available: both pick action 0
    avail[0, 0, 1] = True
    q_on[0, 0, 1, 2] = float("nan")  # NaN beats every number (first NaN wins)
    q_on[0, 0, 1, 4] = float("nan")
    q_on[1, 0, 0, :] = UNAVAILABLE  # available -inf against unavailable ones: a tie at -inf
    q_on[2, 3, 2, 1] = float("inf")
    fast = native_td.double_q_select(q_on, q_tg, avail)
    assert fast is not None
    assert torch.equal(bits(fast), bits(plain_double_q(q_on, q_tg, avail)))
    assert torch.equal(bits(double_q_next_values(q_on, q_tg, avail)), bits(fast))


@needs_c
def test_double_q_select_refuses_what_it_cannot_read() -> None:
    q = torch.randn(2, 3, 4, 5)
    avail = torch.ones(2, 3, 4, 5, dtype=torch.bool)
    assert native_td.double_q_select(q.double(), q.double(), avail) is None
    assert native_td.double_q_select(q, q, avail.float()) is None
    assert native_td.double_q_select(q.transpose(2, 3), q.transpose(2, 3),
                                     avail.transpose(2, 3)) is None
    assert native_td.double_q_select(q[..., :4], q[..., :4], avail[..., :4]) is None


def test_taken_action_values_value_and_gradient() -> None:
    gen = torch.Generator().manual_seed(5)
    b, t, n, a = 6, 8, 3, 5
    base = torch.randn(t + 1, b, n, a, generator=gen)
    actions = torch.randint(0, a, (b, t, n), generator=gen)
    grad = torch.randn(b, t, n, generator=gen)
    grad[0, 0, 0] = -0.0  # a negative zero becomes +0 in torch's scatter_add into zeros

    q1 = base.clone().requires_grad_(True)
    out1 = taken_action_values(q1.transpose(0, 1), actions)
    out1.backward(grad)
    q2 = base.clone().requires_grad_(True)
    out2 = q2.transpose(0, 1)[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    out2.backward(grad)
    assert out1.grad_fn is not None and "TakenActionValues" in type(out1.grad_fn).__name__
    assert torch.equal(bits(out1), bits(out2))
    assert q1.grad is not None and q2.grad is not None
    assert torch.equal(bits(q1.grad), bits(q2.grad))
    with torch.no_grad():  # no node without a gradient
        assert torch.equal(taken_action_values(q1.transpose(0, 1), actions), out2)


@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_masked_td_loss_node_equals_autograd(scale: float) -> None:
    gen = torch.Generator().manual_seed(11)
    q = torch.randn(16, 25, generator=gen) * 3
    y = torch.randn(16, 25, generator=gen) * 3
    mask = (torch.rand(16, 25, generator=gen) < 0.8).float()

    q1 = q.clone().requires_grad_(True)
    loss1 = masked_td_loss(q1, y, mask)
    (loss1 * scale).backward()  # scale: an output gradient other than 1
    q2 = q.clone().requires_grad_(True)
    loss2 = (((q2 - y) * mask) ** 2).sum() / mask.sum().clamp_min(1.0)
    (loss2 * scale).backward()
    assert loss1.grad_fn is not None and "MaskedTdLoss" in type(loss1.grad_fn).__name__
    assert torch.equal(bits(loss1.detach()), bits(loss2.detach()))
    assert q1.grad is not None and q2.grad is not None
    assert torch.equal(bits(q1.grad), bits(q2.grad))


def test_masked_td_loss_broadcast_shapes_use_autograd() -> None:
    q = torch.randn(4, 5, 2, requires_grad=True)
    y, mask = torch.randn(4, 5, 2), torch.ones(4, 5, 1)
    loss = masked_td_loss(q, y, mask)
    assert "MaskedTdLoss" not in type(loss.grad_fn).__name__
    loss.backward()
    assert q.grad is not None and q.grad.shape == q.shape


@needs_c
def test_logged_means_match_torch() -> None:
    gen = torch.Generator().manual_seed(2)
    q_tot, y, reward = (torch.randn(8, 25, generator=gen) for _ in range(3))
    q_taken = torch.randn(8, 25, 3, generator=gen)
    mask = (torch.rand(8, 25, generator=gen) < 0.7).float()
    fast = Qmix.logged_means(q_tot, y, mask, q_taken, reward)
    n = mask.sum().clamp_min(1.0)
    filled = mask.bool()
    plain = [float(v) for v in (
        ((q_tot - y).abs() * mask).sum() / n, (q_taken.mean(-1) * mask).sum() / n,
        (q_tot * mask).sum() / n, (y * mask).sum() / n,
        torch.where(filled, y.abs(), 0.0).max(), torch.where(filled, reward.abs(), 0.0).max())]
    assert fast == pytest.approx(plain, rel=1e-5, abs=1e-6)
    empty = Qmix.logged_means(q_tot, y, torch.zeros_like(mask), q_taken, reward)
    assert empty == [0.0] * 6  # no filled step: means over n = 1 of nothing, maxima 0
