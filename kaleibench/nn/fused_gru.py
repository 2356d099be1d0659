"""A whole-sequence GRU with a hand-written backward pass (BPTT), for the learner's hot path.

Same function as ``torch.nn.GRU`` (one layer, zero initial state), PyTorch's gate layout (r, z, n):

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t−1} + b_hr)
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t−1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t−1} + b_hn))
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1} = n_t + z_t ⊙ (h_{t−1} − n_t)

Why: with the learner's small batches (M = 32 episodes × N agents rows, H = 64) the cost of
``nn.GRU`` on a CPU is per-op overhead — autograd book-keeping and dispatch of ~10 small ops per
step — not arithmetic. Here autograd sees one node, and the work inside is arranged so that the
sequential loops issue as few calls as possible:

* forward, per step: one ``addmm`` (W_hh h + b_hh) and seven element-wise calls: the sigmoid of
  [r; z] at once as ½ + ½ tanh(a/2) (the ½ folded exactly into the [r; z] rows of both
  projections, numpy's tanh being ~2-4× faster than torch's at this size), ``addcmul`` + tanh
  for n, ``lerp`` for h;
* backward: every factor of the chain rule that does not depend on ∂L/∂h_t (σ′, tanh′,
  h_{t−1} − n_t, ...) is computed before the loop in a few whole-sequence calls, so that a step
  is two broadcast products, one ``addcmul`` and one ``addmm``;
* every weight and input gradient is a batched matrix product over all T steps, and the input
  projection W_ih x_t + b_ih is one before the forward loop.

Layout: ``(T, features, M)``, so that a step's block ``a[t]`` and each of its gate blocks are
contiguous. The backward keeps the four gate gradients of a step in one block
``D[t] = [∂n_h; ∂r; ∂z; ∂n]`` (∂n_h = ∂L/∂(W_hn h + b_hn) = r ⊙ ∂n): ``D[t, :3H]`` is the
gradient of W_hh h + b_hh (rows ordered n, r, z) and ``D[t, H:]`` that of W_ih x + b_ih (rows
r, z, n), both contiguous. Float32 throughout, on torch's kernels (numpy's for tanh); outputs and
gradients match ``nn.GRU`` to float rounding (tests/test_fused_gru.py).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from kaleibench.nn import native_gru


class _Pool:
    """Reuses freed float32 work tensors by shape.

    Fresh multi-MB buffers cost a page fault per 4 KiB on first touch (~2 ms per forward here),
    more than the recurrence itself; buffers come back after the backward pass (or at once
    when no gradient is needed) and are handed out again. A buffer that is never given back
    is simply garbage-collected. Only internal buffers are pooled, never a returned tensor.
    """

    KEEP = 4
    """Free buffers kept per shape (a few graphs in flight at once stay allocation-free)."""

    def __init__(self) -> None:
        self._free: dict[tuple[int, ...], list[Tensor]] = {}

    def take(self, *shape: int) -> Tensor:
        """An uninitialised float32 tensor of ``shape``."""
        free = self._free.get(shape)
        return free.pop() if free else torch.empty(shape)

    def give(self, *tensors: Tensor) -> None:
        """Return tensors for reuse; at most ``KEEP`` are kept per shape."""
        for a in tensors:
            free = self._free.setdefault(tuple(a.shape), [])
            if len(free) < self.KEEP:
                free.append(a)


_POOL = _Pool()


def _forward(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
             b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run the recurrence on x (T, M, I).

    Returns:
        hs (T+1, H, M) with hs[0] = 0; gates rz (T, 2H, M) = [r; z], n (T, H, M), and
        gh (T, 3H, M) = W_hh h_{t−1} + b_hh, which the backward pass needs.
    """
    t_len, m, _ = x.shape
    three_h = w_ih.shape[0]
    h_dim = three_h // 3
    # [r; z] rows of both projections carry a factor ½ (exact in float): σ(a) = ½ + ½ tanh(a/2)
    # then needs one tanh of the sum, and numpy's tanh is faster than torch's sigmoid here
    half = torch.ones(three_h, 1)
    half[: 2 * h_dim] = 0.5
    gi = _POOL.take(t_len, three_h, m)
    torch.matmul(w_ih * half, x.transpose(1, 2), out=gi)  # (T, 3H, M) W_ih x_t, all steps
    gi += (b_ih * half[:, 0])[:, None]
    w_hh_half = w_hh * half
    b_col = (b_hh * half[:, 0])[:, None].expand(three_h, m)
    hs = _POOL.take(t_len + 1, h_dim, m)
    hs[0] = 0.0
    rz_all = _POOL.take(t_len, 2 * h_dim, m)
    n_all = _POOL.take(t_len, h_dim, m)
    gh_all = _POOL.take(t_len, three_h, m)  # its [r; z] rows hold ½(W h + b)
    gi_rz, gi_n = (a.unbind(0) for a in gi.split([2 * h_dim, h_dim], dim=1))
    gh_rz, gh_n = (a.unbind(0) for a in gh_all.split([2 * h_dim, h_dim], dim=1))
    r_s, z_s = (a.unbind(0) for a in rz_all.split(h_dim, dim=1))
    h_s, gh_s, rz_s, n_s = hs.unbind(0), gh_all.unbind(0), rz_all.unbind(0), n_all.unbind(0)
    rz_np, n_np = rz_all.numpy(), n_all.numpy()
    for t in range(t_len):
        torch.addmm(b_col, w_hh_half, h_s[t], out=gh_s[t])  # W_hh h_{t−1} + b_hh
        torch.add(gi_rz[t], gh_rz[t], out=rz_s[t])  # ½ of [r; z]'s pre-activation
        rz = rz_np[t]
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5  # [r; z] = σ(·)
        torch.addcmul(gi_n[t], r_s[t], gh_n[t], out=n_s[t])
        np.tanh(n_np[t], out=n_np[t])  # n = tanh(x_n + r ⊙ (W_hn h + b_hn))
        torch.lerp(n_s[t], h_s[t], z_s[t], out=h_s[t + 1])  # h_t = n + z ⊙ (h_{t−1} − n)
    _POOL.give(gi)
    return hs, rz_all, n_all, gh_all


def _chain_factors(hs: Tensor, rz: Tensor, n: Tensor, gh: Tensor) -> tuple[Tensor, Tensor]:
    """The step-local factors of the chain rule, for all steps at once.

    Returns ``f_nr`` (T, 2H, M) = [r; σ′(r)·(W_hn h + b_hn)] and ``f_zn`` (T, 2H, M) =
    [σ′(z)·(h_{t−1} − n); (1 − z)·tanh′(n)], so that with g = ∂L/∂h_t:
    [∂z; ∂n] = g·f_zn and [∂n_h; ∂r] = ∂n·f_nr (σ′(a) = a(1 − a), tanh′(n) = 1 − n²).
    """
    t_len, two_h, m = rz.shape
    h_dim = two_h // 2
    r, z, ghn = rz[:, :h_dim], rz[:, h_dim:], gh[:, 2 * h_dim:]
    f_nr = _POOL.take(t_len, two_h, m)
    f_zn = _POOL.take(t_len, two_h, m)
    one_minus = _POOL.take(t_len, h_dim, m)
    f_nr[:, :h_dim] = r
    f_r = f_nr[:, h_dim:]
    torch.neg(r, out=one_minus).add_(1.0)
    torch.mul(r, one_minus, out=f_r)
    f_r *= ghn
    f_z, f_n = f_zn[:, :h_dim], f_zn[:, h_dim:]
    torch.neg(z, out=one_minus).add_(1.0)
    torch.sub(hs[:-1], n, out=f_z)
    f_z *= z
    f_z *= one_minus
    torch.mul(n, n, out=f_n)
    f_n.neg_().add_(1.0)
    f_n *= one_minus
    _POOL.give(one_minus)
    return f_nr, f_zn


def _backward(grad_h: Tensor, hs: Tensor, rz: Tensor, n: Tensor, gh: Tensor,
              w_hh: Tensor) -> Tensor:
    """BPTT. grad_h (T, H, M) = ∂L/∂h_t from the outputs, overwritten with the total ∂L/∂h_t.

    Returns D (T, 4H, M) = [∂n_h; ∂r; ∂z; ∂n] of every step (see the module docstring).
    """
    t_len, h_dim, m = grad_h.shape
    f_nr, f_zn = _chain_factors(hs, rz, n, gh)
    d = _POOL.take(t_len, 4 * h_dim, m)
    # W_hh^T with its row blocks in D's order (n, r, z): ∂h_{t−1} += W^T D[t, :3H]
    w_nrz_t = torch.cat([w_hh[2 * h_dim:], w_hh[: 2 * h_dim]]).t()  # (H, 3H)
    g_s = grad_h.unbind(0)
    z_s = rz[:, h_dim:].unbind(0)
    f_nr_s = f_nr.view(t_len, 2, h_dim, m).unbind(0)
    f_zn_s = f_zn.view(t_len, 2, h_dim, m).unbind(0)
    d_s = d.unbind(0)
    d_nr_s = d[:, : 2 * h_dim].view(t_len, 2, h_dim, m).unbind(0)
    d_zn_s = d[:, 2 * h_dim:].view(t_len, 2, h_dim, m).unbind(0)
    d_n_s = d[:, 3 * h_dim:].unbind(0)
    for t in range(t_len - 1, -1, -1):
        g = g_s[t]  # total ∂L/∂h_t
        torch.mul(f_zn_s[t], g, out=d_zn_s[t])  # [∂z; ∂n]
        torch.mul(f_nr_s[t], d_n_s[t], out=d_nr_s[t])  # [∂n_h; ∂r]
        if t > 0:  # ∂L/∂h_{t−1} = its own output gradient + z ⊙ g + W_hh^T ∂(W_hh h)
            g_s[t - 1].addcmul_(g, z_s[t])
            g_s[t - 1].addmm_(w_nrz_t, d_s[t][: 3 * h_dim])
    _POOL.give(f_nr, f_zn)
    return d


class _GruSequence(torch.autograd.Function):
    """One autograd node for the recurrence: x (T, M, I) -> h_1..h_T (T, M, H)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                b_hh: Tensor) -> Tensor:
        x = x.contiguous()
        hs, rz, n, gh = _forward(x, w_ih, w_hh, b_ih, b_hh)
        ctx.save_for_backward(x, w_ih, w_hh)  # autograd's version check: no in-place edits
        ctx.buffers = (hs, rz, n, gh)
        return _hidden_states(hs)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, w_ih, w_hh = ctx.saved_tensors
        hs, rz, n, gh = ctx.buffers
        del ctx.buffers
        t_len, m, h_dim = grad_out.shape
        g = _POOL.take(t_len, h_dim, m)
        g.copy_(grad_out.transpose(1, 2))  # (T, H, M)
        d = _backward(g, hs, rz, n, gh, w_hh)
        d_gi, d_gh = d[:, h_dim:], d[:, : 3 * h_dim]  # rows (r, z, n) and (n, r, z)
        grad_x = None
        if ctx.needs_input_grad[0]:
            t_len_i = (t_len, *w_ih.t().shape)
            grad_x_t = torch.bmm(w_ih.t().expand(t_len_i), d_gi)  # (T, I, M)
            grad_x = grad_x_t.transpose(1, 2).contiguous()  # (T, M, I); strided grads slow
            # every later backward op, one small transposing copy does not
        grad_w_ih = torch.bmm(d_gi, x).sum(0)  # (3H, I)
        grad_w_hh_nrz = torch.bmm(d_gh, hs[:-1].transpose(1, 2)).sum(0)  # (3H, H), rows n, r, z
        grad_b_hh_nrz = d_gh.sum((0, 2))
        grad_w_hh = torch.cat([grad_w_hh_nrz[h_dim:], grad_w_hh_nrz[:h_dim]])
        grad_b_hh = torch.cat([grad_b_hh_nrz[h_dim:], grad_b_hh_nrz[:h_dim]])
        grads = (grad_x, grad_w_ih, grad_w_hh, d_gi.sum((0, 2)), grad_b_hh)
        _POOL.give(g, d, hs, rz, n, gh)
        return grads


def _hidden_states(hs: Tensor) -> Tensor:
    """hs (T+1, H, M) -> h_1..h_T as a (T, M, H) tensor that owns its memory."""
    return hs[1:].transpose(1, 2).clone(memory_format=torch.contiguous_format)


def gru_parameters(rnn: torch.nn.GRU) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The first layer's W_ih (3H, I), W_hh (3H, H), b_ih (3H,) and b_hh (3H,); read from the
    module's parameter dict (``nn.Module``'s attribute look-up cost ~0.5 µs a name)."""
    params = rnn._parameters
    w_ih, w_hh, b_ih, b_hh = (params[f"{name}_l0"] for name in
                              ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    return cast(tuple[Tensor, Tensor, Tensor, Tensor], (w_ih, w_hh, b_ih, b_hh))


def gru_sequence_fused(rnn: torch.nn.GRU, x: Tensor) -> Tensor:
    """``rnn``'s weights (one layer, float32) over time-major sequences from a zero state.

    x (T, M, I), whatever ``rnn.batch_first`` says -> hidden states (T, M, H); gradients reach
    ``x`` and the GRU's parameters. Where the C kernels of :mod:`kaleibench.nn.native_gru`
    build (a C compiler is present, ``KALEIBENCH_NATIVE`` is not 0), they compute it, with and
    without a gradient. Otherwise: the torch/numpy implementation of this module, and without a
    gradient to compute (the target network's pass) ``rnn`` itself, which is faster there.
    """
    if rnn.num_layers != 1 or rnn.bidirectional or not rnn.bias:
        raise ValueError("gru_sequence_fused supports one-layer, uni-directional GRUs with bias")
    w_ih, w_hh, b_ih, b_hh = gru_parameters(rnn)
    if x.dtype != torch.float32 or w_ih.dtype != torch.float32:
        raise TypeError(f"gru_sequence_fused is float32 only, got {x.dtype}/{w_ih.dtype}")
    if native_gru.available():  # the gate arithmetic in C: same function, fewer calls
        return native_gru.gru_sequence_native(x, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and (x.requires_grad or w_ih.requires_grad):
        out: Tensor = _GruSequence.apply(x, w_ih, w_hh, b_ih, b_hh)
        return out
    with torch.no_grad():  # without a gradient, torch's own GRU kernel is the faster one
        out, _ = rnn(x.transpose(0, 1) if rnn.batch_first else x)
    return out.transpose(0, 1) if rnn.batch_first else out
