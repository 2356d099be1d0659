"""QMIX's mixer as one autograd node, its per-row arithmetic in C (``mix_kernels.c``).

Same function as :class:`kaleibench.nn.mixers.QMixer`'s torch path:

    [h_w1 | h_wf | h_v | b1] = [ReLU | ReLU | ReLU | id](s W_c^T + b_c)   (one product)
    w1 = h_w1 W_w1^T + c_w1,   wf = h_wf W_wf^T + c_wf,   v = h_v W_v^T + c_v
    a = q |w1| + b1,   Q_tot = ELU(a) · |wf| + v

Why: on the learner's batches (M = 32 episodes × 25 steps = 800 rows) the mixer's products are
~0.7 ms of arithmetic forward and backward, but autograd recorded ~40 nodes for it (products,
ReLUs, |·|, ELU, broadcast products and sums, splits, concatenations), each with dispatch and
book-keeping. Here the forward pass is two C calls (the hypernetworks' products and ReLUs, then
the mixing step) and the backward pass one (the mixing step's backward pass, the products of the
chain rule, the ReLUs' mask and one weight-gradient product per layer), each the same
operations in the same order as the product functions of :mod:`kaleibench.nn.products` (as
separate calls they spent ~0.1 ms of dispatch per update). The state gets no gradient (it is
data). :func:`forward_saving` and :func:`backward` are the node's two halves as plain
functions, which the QMIX learner's update also calls directly, without autograd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

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
    "qmix_hyper_bwd": ([*[_P] * 3, _I64, *[_P] * 7, *[_I64] * 7, *[_P] * 9], native.INT),
    "qmix_hyper": ([_P, _I64, _I64, _I64, *[_P] * 8, _I64, _I64, _I64, _I64, *[_P] * 6, _I64,
                    _P, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _I64, native.INT], native.INT),
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


def hypernetworks(s: Tensor, params: tuple[Tensor, ...] | list[Tensor], pre: Tensor, w1: Tensor,
                  wf: Tensor, v: Tensor, b1: Tensor | None = None) -> None:
    """The hypernetworks of states s (M, S) in one C call (``qmix_hyper``), written into the
    given 2-D float32 views (rows a fixed stride apart, columns adjacent):

        pre (M, K + E) = s W_cᵀ + b_c with ReLU on its first K columns (h = pre[:, :K]),
        w1 (M, N·E), wf (M, E), v (M, 1) = the second layers of h's three parts.

    The operations of :func:`~kaleibench.nn.products.linear_stacked`, the ReLU and three
    :func:`~kaleibench.nn.products.linear` calls, so the same floats. With ``b1`` (M, E) given,
    w1 and wf are stored as their absolute values and b1 receives pre's last E columns: the
    target mixer's packed weights. ``params`` in :class:`NativeQMix`'s order (contiguous)."""
    lib = kernels()
    assert lib is not None, "hypernetworks needs the C kernels (see native_mix.available)"
    firsts, biases = params[0:4], params[4:8]
    w_w1, c_w1, w_wf, c_wf, w_v, c_v = params[8:14]
    h1, h2, h3, e = (w.shape[0] for w in firsts)
    m, n_s = s.shape
    if not (all(p.dtype == torch.float32 and p.is_contiguous() for p in params)
            and all(w.shape[1] == n_s for w in firsts) and w_w1.shape[1] == h1
            and w_wf.shape == (e, h2) and w_v.shape == (1, h3)
            and pre.shape == (m, h1 + h2 + h3 + e)
            and w1.shape == (m, w_w1.shape[0]) and wf.shape == (m, e) and v.shape == (m, 1)
            and (b1 is None or b1.shape == (m, e))):
        raise ValueError("hypernetworks: parameters or outputs of unexpected shape, dtype or "
                         "layout")
    status = lib.qmix_hyper(
        s.data_ptr(), _rows(s), m, n_s, *(w.data_ptr() for w in firsts),
        *(b.data_ptr() for b in biases), h1, h2, h3, e, w_w1.data_ptr(), c_w1.data_ptr(),
        w_wf.data_ptr(), c_wf.data_ptr(), w_v.data_ptr(), c_v.data_ptr(), w_w1.shape[0],
        pre.data_ptr(), _rows(pre), w1.data_ptr(), _rows(w1), wf.data_ptr(), _rows(wf),
        v.data_ptr(), _rows(v), None if b1 is None else b1.data_ptr(),
        0 if b1 is None else _rows(b1), int(b1 is not None))
    if status != 0:
        raise MemoryError("mix_kernels.c could not allocate the transposed weights")


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
    w_w1, w_wf, w_v = params[8], params[10], params[12]
    m, e = q.shape[0], params[3].shape[0]
    k = sum(w.shape[0] for w in params[0:3])  # H_w1 + H_wf + H_v
    s = s.contiguous()
    pre = torch.empty(m, k + e)  # s W_cᵀ + b_c, ReLU on its first k columns
    w1, wf, v = torch.empty(m, w_w1.shape[0]), torch.empty(m, e), torch.empty(m, 1)
    hypernetworks(s, params, pre, w1, wf, v)
    y, a = mix(q, w1, pre[:, k:], wf, v, save=True)  # (the backward pass's ReLU mask pre > 0
    assert a is not None  # is the same after the ReLUs, which hypernetworks applied in place)
    return y, (q, s, pre, w1, wf, a, w_w1, w_wf, w_v)


def backward(saved: tuple[Tensor, ...], gy: Tensor,
             need_q: bool = True) -> tuple[Tensor | None, tuple[Tensor, ...]]:
    """(∂L/∂q or None, the parameters' gradients in :class:`NativeQMix`'s order) from
    ∂L/∂Q_tot (M,) and :func:`forward_saving`'s ``saved``: one C call (``qmix_hyper_bwd``: the
    mixing step's backward pass, the second layers' input gradients, the ReLUs' mask, then every
    weight and bias gradient as the products of :func:`~kaleibench.nn.products.weight_grad`)."""
    q, s, pre, w1, wf, a, w_w1, w_wf, w_v = saved
    lib = kernels()
    assert lib is not None, "the C kernels were loaded for the forward pass"
    m, n = q.shape
    e = a.shape[1]
    widths = [w_w1.shape[1], w_wf.shape[1], w_v.shape[1], e]  # the hidden widths, then E
    if not (w_w1.is_contiguous() and w_wf.is_contiguous() and w_v.is_contiguous()):
        raise ValueError("the mixer's second-layer weights must be contiguous")
    q, gy = q.contiguous(), gy.contiguous()
    d_q = torch.empty(m, n)
    g_first, b_first = torch.empty(pre.shape[1], s.shape[1]), torch.empty(pre.shape[1])
    seconds = [(torch.empty(w.shape), torch.empty(w.shape[0])) for w in (w_w1, w_wf, w_v)]
    status = lib.qmix_hyper_bwd(
        gy.data_ptr(), q.data_ptr(), s.data_ptr(), _rows(s), pre.data_ptr(), w1.data_ptr(),
        wf.data_ptr(), a.data_ptr(), w_w1.data_ptr(), w_wf.data_ptr(), w_v.data_ptr(), m, n,
        s.shape[1], *widths, d_q.data_ptr(), g_first.data_ptr(), b_first.data_ptr(),
        *(t.data_ptr() for pair in seconds for t in pair))
    if status != 0:
        raise MemoryError("mix_kernels.c could not allocate the mixer's backward work arrays")
    grads: tuple[Tensor, ...] = (*g_first.split(widths), *b_first.split(widths),  # per layer
                                 *(t for pair in seconds for t in pair))
    return (d_q if need_q else None), grads
