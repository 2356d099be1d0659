"""The GRU agent's whole unroll, fc1 → ReLU → GRU → fc2, as one autograd node.

    y = ReLU(x W₁ᵀ + b₁),  h_1..h_T = GRU(y) from h_0 = 0,  q = h W₂ᵀ + b₂

The same operations as the three nodes of :func:`kaleibench.nn.dense.dense` (fc1, fc2) and
:class:`kaleibench.nn.native_gru.NativeGruSequence` in sequence, and the same floats (tested):
fc1's and fc2's products as :mod:`kaleibench.nn.products` computes them, the recurrence and
its BPTT as ``gru_kernels.c``'s sequence kernels do, each direction in one C call
(``gru_agent_fwd``, ``gru_agent_bwd``). One node instead of three spares two autograd nodes
per update, their saved-tensor bookkeeping and views, and the copy of the GRU's output
gradient; one C call each way spares ~10 product and kernel calls from Python. Without a gradient
(the target network's pass) the same calls run without any node. :func:`forward_saving` and
:func:`backward` are the node's two halves as plain functions: the QMIX learner's update calls
them directly, without autograd (:meth:`kaleibench.algos.qmix.Qmix.td_loss_and_gradients`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kaleibench.nn import native_gru


def available() -> bool:
    """Whether the C kernels this node needs can run here."""
    return native_gru.available()


_ELEMENT = 4  # bytes per float32


def _check(x: Tensor, params: tuple[Tensor, ...], t_len: int) -> None:
    """Refuse what the C kernels would misread: they see raw float32 memory of these shapes."""
    w1, b1, w_ih, w_hh, b_ih, b_hh, w2, b2 = params
    h, a = w1.shape[0], w2.shape[0]
    if not (x.dim() == 2 and x.dtype == torch.float32 and x.is_contiguous()
            and x.shape[0] % t_len == 0
            and all(p.dtype == torch.float32 and p.is_contiguous() for p in params)
            and w1.shape == (h, x.shape[1]) and b1.shape == (h,) and w_ih.shape == (3 * h, h)
            and w_hh.shape == (3 * h, h) and b_ih.shape == (3 * h,) and b_hh.shape == (3 * h,)
            and w2.shape == (a, h) and b2.shape == (a,)):
        raise ValueError(
            "the GRU agent's C kernels need contiguous float32 x (T·M, I), fc1 (H, I), GRU "
            "(3H, H) weights and (3H,) biases, fc2 (A, H); got x "
            f"{tuple(x.shape)} and {[tuple(p.shape) for p in params]}")


def _forward(x: Tensor, w1: Tensor, b1: Tensor, gru: tuple[Tensor, Tensor, Tensor, Tensor],
             w2: Tensor, b2: Tensor, t_len: int,
             save: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """x (T·M, I) -> q (T·M, A), with fc1's output y (T·M, H), the states hs (T+1, M, H) and,
    when ``save``, the gates (4, T, M, H) = [r, z, n, W_hn h + b_hn]: one C call
    (``gru_agent_fwd``), the operations of fc1's and fc2's products
    (:func:`~kaleibench.nn.products.linear`) and of the GRU's sequence kernel."""
    lib = native_gru.kernels()
    assert lib is not None, "the GRU agent node needs the C kernels (see native_agent.available)"
    params = (w1, b1, *gru, w2, b2)
    _check(x, params, t_len)
    rows, i = x.shape
    hid, a = w1.shape[0], w2.shape[0]
    m = rows // t_len
    y, hs, q = torch.empty(rows, hid), torch.empty(t_len + 1, m, hid), torch.empty(rows, a)
    gates = torch.empty(4, t_len, m, hid) if save else None
    if gates is None:
        gate_ptrs: tuple[int | None, ...] = (None,) * 4
    else:
        base, step = gates.data_ptr(), t_len * m * hid * _ELEMENT
        gate_ptrs = tuple(base + k * step for k in range(4))
    status = lib.gru_agent_fwd(x.data_ptr(), *(p.data_ptr() for p in params), y.data_ptr(),
                               hs.data_ptr(), q.data_ptr(), *gate_ptrs, t_len, m, i, hid, a,
                               int(save))  # fmt: skip
    if status != 0:
        raise MemoryError("gru_kernels.c could not allocate the agent's work space")
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
    (T·M, A) and :func:`forward_saving`'s ``saved``: one C call (``gru_agent_bwd``), the
    operations of

        ∂W₂, ∂b₂ = weight_grad(∂q, h);  ∂h = ∂q W₂;  the GRU's BPTT and its input and parameter
        gradients (:func:`kaleibench.nn.native_gru.bptt`);  ∂a = ∂y where y > 0 (fc1's ReLU);
        ∂W₁, ∂b₁ = weight_grad(∂a, x)."""
    x, y, w_ih, w_hh, hs, gates, w2 = saved
    lib = native_gru.kernels()
    assert lib is not None, "the C kernels were loaded for the forward pass"
    t_len, m, hid = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    i, a = x.shape[1], w2.shape[0]
    grad_q = grad_q.contiguous()
    if grad_q.shape != (t_len * m, a) or grad_q.dtype != torch.float32:
        raise ValueError(f"grad_q must be float32 {(t_len * m, a)}, got {grad_q.dtype} "
                         f"{tuple(grad_q.shape)}")  # fmt: skip
    steps = t_len  # the backward pass over the first `steps` steps
    if t_len > 1 and not bool(grad_q[(t_len - 1) * m:].any()):
        # The last step carries no gradient (QMIX: its Q-values only choose the next action
        # of the TD target). Its BPTT step and its rows of every weight gradient would add
        # only zeros (±0 terms: each sum the same, at most an exact zero's sign differs, which
        # Adam's step never shows), so they are skipped: 1/T of the backward pass.
        steps = t_len - 1
    grads = (torch.empty(hid, i), torch.empty(hid), torch.empty(3 * hid, hid),
             torch.empty(3 * hid, hid), torch.empty(3 * hid), torch.empty(3 * hid),
             torch.empty(a, hid), torch.empty(a))
    base, step = gates.data_ptr(), t_len * m * hid * _ELEMENT
    status = lib.gru_agent_bwd(grad_q.data_ptr(), x.data_ptr(), y.data_ptr(), hs.data_ptr(),
                               *(base + k * step for k in range(4)), w_ih.data_ptr(),
                               w_hh.data_ptr(), w2.data_ptr(), *(g.data_ptr() for g in grads),
                               steps, m, i, hid, a)  # fmt: skip
    if status != 0:
        raise MemoryError("gru_kernels.c could not allocate the agent's backward work space")
    return grads


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
