"""QMIX's mixer as one autograd node, its per-row arithmetic in C (``mix_kernels.c``).

Same function as :class:`kaleibench.nn.mixers.QMixer`'s torch path:

    [h_w1 | h_wf | h_v | b1] = [ReLU | ReLU | ReLU | id](s W_c^T + b_c)   (one product)
    w1 = h_w1 W_w1^T + c_w1,   wf = h_wf W_wf^T + c_wf,   v = h_v W_v^T + c_v
    a = q |w1| + b1,   Q_tot = ELU(a) · |wf| + v

Why: on the learner's batches (M = 32 episodes × 25 steps = 800 rows) the mixer's products are
~0.7 ms of arithmetic forward and backward, but autograd recorded ~40 nodes for it (products,
ReLUs, |·|, ELU, broadcast products and sums, splits, concatenations), each with dispatch and
book-keeping. Here the forward pass is four products and one C call, and the backward pass is
written out: one C call for the mixing (∂L/∂w1, ∂L/∂b1, ∂L/∂wf, ∂L/∂q), the products of the
chain rule, one C call for the ReLUs' mask, and the weight gradients as one product per layer.
The state gets no gradient (it is data). :func:`forward_saving` and :func:`backward` are the
node's two halves as plain functions, which the QMIX learner's update also calls directly,
without autograd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kaleibench.nn.products import linear, linear_stacked, matmul, weight_grad
from kaleibench.utils import native

SOURCE = str(Path(__file__).with_name("mix_kernels.c"))

_P, _I64 = native.P, native.I64
MAX_EMBED = 1024
"""Largest mixing width E the kernels take (their per-row scratch arrays)."""
SIGNATURES: native.Signatures = {
    "qmix_mix_fwd": ([_P, _P, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _P, _I64, _I64, _I64],
                     None),
    "qmix_mix_bwd": ([_P, _P, _P, _I64, _P, _I64, _P, _P, _P, _I64, _P, _P, _I64, _I64, _I64],
                     None),
    "relu_grad": ([_P, _I64, _P, _I64, _P, _I64, _I64, _I64], None),
}


def kernels() -> Any | None:
    """The loaded C library with its argument types declared, or None (see
    :func:`kaleibench.utils.native.load`)."""
    return native.load_declared(SOURCE, SIGNATURES)


def available(embed_dim: int) -> bool:
    """Whether the C kernels can run here for mixing width ``embed_dim``."""
    return embed_dim <= MAX_EMBED and kernels() is not None


def _rows(a: Tensor) -> int:
    """Row stride (in floats) of a 2-D float32 view whose rows are contiguous."""
    assert a.dim() == 2 and a.dtype == torch.float32 and (a.stride(1) == 1 or a.shape[1] == 1)
    return a.stride(0)


def mix(q: Tensor, w1: Tensor, b1: Tensor, wf: Tensor, v: Tensor, save: bool
        ) -> tuple[Tensor, Tensor | None]:
    """Q_tot (M,) = ELU(q |w1| + b1) · |wf| + v for q (M, N) and the raw hypernetwork outputs
    w1 (M, N·E), b1 (M, E), wf (M, E), v (M, 1) (2-D views with contiguous rows; |·| is taken
    here, so already non-negative weights give the same result). With ``save`` also the
    pre-activations a (M, E), which :class:`NativeQMix`'s backward pass reads."""
    lib = kernels()
    assert lib is not None, "mix needs the C kernels (see native_mix.available)"
    m, n = q.shape
    e = b1.shape[1]
    q = q.contiguous()
    y = torch.empty(m)
    a = torch.empty(m, e) if save else None
    lib.qmix_mix_fwd(q.data_ptr(), w1.data_ptr(), _rows(w1), b1.data_ptr(), _rows(b1),
                     wf.data_ptr(), _rows(wf), v.data_ptr(), _rows(v), y.data_ptr(),
                     None if a is None else a.data_ptr(), m, n, e)  # fmt: skip
    return y, a


class NativeQMix(torch.autograd.Function):
    """One autograd node: (q (M, N), s (M, S), the hypernetworks' parameters) -> Q_tot (M,).

    Parameters, in this order: the first layers of the W1, Wf and V hypernetworks and the b1
    layer (weights then biases, four each), then the second layers of W1, Wf and V (weight,
    bias pairs).
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, s: Tensor, *params: Tensor) -> Tensor:
        y, saved = forward_saving(q, s, params)
        ctx.save_for_backward(*saved)
        return y

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        grad_q, grads = backward(ctx.saved_tensors, gy, need_q=ctx.needs_input_grad[0])
        return (grad_q, None, *grads)


def forward_saving(q: Tensor, s: Tensor,
                   params: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Q_tot (M,) for q (M, N) and states s (M, S), with the parameters in
    :class:`NativeQMix`'s order, and what :func:`backward` needs (without autograd)."""
    firsts, first_biases = params[0:4], params[4:8]
    w_w1, c_w1, w_wf, c_wf, w_v, c_v = params[8:14]
    widths = [w.shape[0] for w in firsts]  # (H_w1, H_wf, H_v, E)
    k = sum(widths[:3])
    s = s.contiguous()
    pre = linear_stacked(s, firsts, first_biases)  # (M, Σ widths)
    h = pre[:, :k].clamp_min_(0.0)  # (M, H_w1 + H_wf + H_v): the ReLUs in place (the
    # backward pass's mask pre > 0 is the same after them)
    h_w1, h_wf, h_v = h.split(widths[:3], dim=1)
    w1 = linear(h_w1, w_w1, c_w1)  # (M, N·E)
    wf = linear(h_wf, w_wf, c_wf)  # (M, E)
    v = linear(h_v, w_v, c_v)  # (M, 1)
    y, a = mix(q, w1, pre[:, k:], wf, v, save=True)
    assert a is not None
    return y, (q, s, pre, h, w1, wf, a, w_w1, w_wf, w_v)


def backward(saved: tuple[Tensor, ...], gy: Tensor,
             need_q: bool = True) -> tuple[Tensor | None, tuple[Tensor, ...]]:
    """(∂L/∂q or None, the parameters' gradients in :class:`NativeQMix`'s order) from
    ∂L/∂Q_tot (M,) and :func:`forward_saving`'s ``saved``."""
    q, s, pre, h, w1, wf, a, w_w1, w_wf, w_v = saved
    lib = kernels()
    assert lib is not None, "the C kernels were loaded for the forward pass"
    m, n = q.shape
    e = a.shape[1]
    k = pre.shape[1] - e
    widths = [w_w1.shape[1], w_wf.shape[1], w_v.shape[1], e]  # the hidden widths, then E
    gy = gy.contiguous()
    d_pre = torch.empty(m, k + e)  # ∂L/∂(s W_c^T + b_c)
    d_w1, d_wf, d_q = torch.empty(m, n * e), torch.empty(m, e), torch.empty(m, n)
    lib.qmix_mix_bwd(gy.data_ptr(), q.data_ptr(), w1.data_ptr(), _rows(w1), wf.data_ptr(),
                     _rows(wf), a.data_ptr(), d_w1.data_ptr(), d_pre[:, k:].data_ptr(),
                     k + e, d_wf.data_ptr(), d_q.data_ptr(), m, n, e)  # fmt: skip
    d_v = gy.view(m, 1)
    d_h = torch.empty(m, k)  # ∂L/∂h: the second layers' input gradients, side by side
    d_h_w1, d_h_wf, d_h_v = d_h.split(widths[:3], dim=1)
    matmul(d_w1, w_w1, out=d_h_w1)
    matmul(d_wf, w_wf, out=d_h_wf)
    matmul(d_v, w_v, out=d_h_v)
    lib.relu_grad(pre.data_ptr(), k + e, d_h.data_ptr(), k, d_pre.data_ptr(), k + e, m, k)
    h_w1, h_wf, h_v = h.split(widths[:3], dim=1)
    g_first, b_first = weight_grad(d_pre, s, bias=True)  # (Σ widths, S), (Σ widths,)
    seconds = [weight_grad(d, x, bias=True) for d, x in ((d_w1, h_w1), (d_wf, h_wf), (d_v, h_v))]
    assert b_first is not None and all(b is not None for _, b in seconds)
    grads: tuple[Tensor, ...] = (*g_first.split(widths), *b_first.split(widths),  # per layer
                                 *(t for pair in seconds for t in pair if t is not None))
    return (d_q if need_q else None), grads
