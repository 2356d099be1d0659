"""The GRU agent's whole unroll, fc1 → ReLU → GRU → fc2, as one autograd node.

    y = ReLU(x W₁ᵀ + b₁),  h_1..h_T = GRU(y) from h_0 = 0,  q = h W₂ᵀ + b₂

The same operations as the three nodes of :func:`kaleibench.nn.dense.dense` (fc1, fc2) and
:class:`kaleibench.nn.native_gru.NativeGruSequence` in sequence, and the same floats (tested):
fc1's and fc2's products through :mod:`kaleibench.nn.products`, the recurrence and its BPTT
through the C kernels of ``gru_kernels.c``. One node instead of three spares two autograd nodes
per update, their saved-tensor bookkeeping and views, and the copy of the GRU's output gradient
(fc2's input gradient arrives here as a fresh tensor the BPTT may overwrite). Without a gradient
(the target network's pass) the same calls run without any node. :func:`forward_saving` and
:func:`backward` are the node's two halves as plain functions: the QMIX learner's update calls
them directly, without autograd (:meth:`kaleibench.algos.qmix.Qmix.td_loss_and_gradients`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kaleibench.nn import native_gru
from kaleibench.nn.products import linear, matmul, weight_grad


def available() -> bool:
    """Whether the C kernels this node needs can run here."""
    return native_gru.available()


def _forward(x: Tensor, w1: Tensor, b1: Tensor, gru: tuple[Tensor, Tensor, Tensor, Tensor],
             w2: Tensor, b2: Tensor, t_len: int,
             save: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """x (T·M, I) -> q (T·M, A), with fc1's output y (T·M, H), the states hs (T+1, M, H) and,
    when ``save``, the gates (see :func:`kaleibench.nn.native_gru._forward`)."""
    lib = native_gru.kernels()
    assert lib is not None, "the GRU agent node needs the C kernels (see native_agent.available)"
    y = linear(x, w1, b1)
    y.clamp_min_(0.0)  # ReLU in place, as fc1's dense node
    hid = w1.shape[0]
    w_ih, w_hh, b_ih, b_hh = gru
    hs, gates = native_gru._forward(lib, y.view(t_len, -1, hid), w_ih, w_hh, b_ih, b_hh, save)
    q = linear(hs[1:].reshape(-1, hid), w2, b2)  # hs[1:] is contiguous: a view
    return q, y, hs, gates


def forward_saving(x: Tensor, w1: Tensor, b1: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                   b_hh: Tensor, w2: Tensor, b2: Tensor,
                   t_len: int) -> tuple[Tensor, tuple[Tensor, ...]]:
    """q (T·M, A) of x (T·M, I), and what :func:`backward` needs (without autograd)."""
    q, y, hs, gates = _forward(x, w1, b1, (w_ih, w_hh, b_ih, b_hh), w2, b2, t_len, True)
    assert gates is not None
    return q, (x, y, w_ih, w_hh, hs, gates, w2)


def backward(saved: tuple[Tensor, ...], grad_q: Tensor) -> tuple[Tensor, ...]:
    """The eight parameters' gradients (W₁, b₁, W_ih, W_hh, b_ih, b_hh, W₂, b₂) from ∂L/∂q
    (T·M, A) and :func:`forward_saving`'s ``saved``."""
    x, y, w_ih, w_hh, hs, gates, w2 = saved
    lib = native_gru.kernels()
    assert lib is not None, "the C kernels were loaded for the forward pass"
    t_len, m, hid = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    grad_q = grad_q.contiguous()
    # fc2: ∂L/∂W₂ = Σ ∂qᵀ h, ∂L/∂b₂ = Σ ∂q, ∂L/∂h = ∂q W₂ (a new tensor the BPTT overwrites)
    g_w2, g_b2 = weight_grad(grad_q, hs[1:].reshape(-1, hid), bias=True)
    g = matmul(grad_q, w2.detach())
    # the GRU: BPTT in one C call, then its input and parameter gradients
    g_ih, g_hh, g_bih, g_bhh, grad_y = native_gru.bptt(lib, g, y.view(t_len, m, hid), w_ih,
                                                       w_hh, hs, gates)  # fmt: skip
    assert grad_y is not None and g_bih is not None and g_bhh is not None
    # fc1 with its ReLU: ∂L/∂a = ∂L/∂y where y > 0
    g_a = torch.ops.aten.threshold_backward(grad_y.view(-1, hid), y, 0.0)
    g_w1, g_b1 = weight_grad(g_a, x, bias=True)
    assert g_b1 is not None and g_b2 is not None
    return g_w1, g_b1, g_ih, g_hh, g_bih, g_bhh, g_w2, g_b2


class GruAgentSequence(torch.autograd.Function):
    """x (T·M, I) rows, time-major -> q (T·M, A); gradients for the eight parameters (the
    inputs are data: none for x)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w1: Tensor, b1: Tensor, w_ih: Tensor, w_hh: Tensor,
                b_ih: Tensor, b_hh: Tensor, w2: Tensor, b2: Tensor, t_len: int) -> Tensor:
        q, saved = forward_saving(x, w1, b1, w_ih, w_hh, b_ih, b_hh, w2, b2, t_len)
        ctx.save_for_backward(*saved)
        return q

    @staticmethod
    def backward(ctx: Any, grad_q: Tensor) -> tuple[Tensor | None, ...]:
        return None, *backward(ctx.saved_tensors, grad_q), None


def gru_agent_unroll(x: Tensor, w1: Tensor, b1: Tensor,
                     gru: tuple[Tensor, Tensor, Tensor, Tensor], w2: Tensor, b2: Tensor,
                     t_len: int) -> Tensor:
    """q (T·M, A) of time-major input rows x (T·M, I) (float32, contiguous); one autograd node
    when a parameter needs a gradient, plain calls otherwise."""
    params = (w1, b1, *gru, w2, b2)
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        out: Tensor = GruAgentSequence.apply(x, *params, t_len)
        return out
    with torch.no_grad():
        return _forward(x, w1, b1, gru, w2, b2, t_len, False)[0]
