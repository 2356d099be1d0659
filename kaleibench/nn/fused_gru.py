"""A whole-sequence GRU with a hand-written backward pass (BPTT), for the learner's hot path.

Same function as ``torch.nn.GRU`` (one layer, zero initial state), PyTorch's gate layout (r, z, n):

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t−1} + b_hr)
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t−1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t−1} + b_hn))
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}

Why: with the learner's small batches (M = 32 episodes × N agents rows, H = 64) the cost of
``nn.GRU`` on a CPU is per-op overhead — autograd book-keeping and dispatch of ~10 small ops per
step (a (96, 64) ``tanh`` alone takes ~18 µs in torch, ~2 µs in numpy) — not arithmetic. Here
autograd sees one node; the recurrence runs as numpy ufuncs writing into preallocated buffers,
and every weight gradient is one large matrix product over all T·M rows instead of T small ones.

Layout: ``(T, features, M)`` inside the loops, so that one step's block ``a[t]`` and each of its
gate blocks ``a[t, :H]`` are contiguous (numpy is ~5× slower on short strided rows); the big
products use ``(features, T·M)`` copies. Float32 throughout; outputs and gradients match
``nn.GRU`` to float rounding (tests/test_fused_gru.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

F32 = np.float32


class _Pool:
    """Reuses freed float32 work arrays by shape.

    Fresh multi-MB arrays cost a page fault per 4 KiB on first touch (~2 ms per forward here),
    more than the recurrence itself; arrays come back after the backward pass (or at once
    when no gradient is needed) and are handed out again. An array that is never given back
    is simply garbage-collected.
    """

    KEEP = 4
    """Free arrays kept per shape: two GRU passes (online, target) need at most two sets."""

    def __init__(self) -> None:
        self._free: dict[tuple[int, ...], list[np.ndarray]] = {}

    def take(self, *shape: int) -> np.ndarray:
        """An uninitialised array of ``shape``."""
        free = self._free.get(shape)
        return free.pop() if free else np.empty(shape, F32)

    def give(self, *arrays: np.ndarray) -> None:
        """Return arrays (not views) for reuse; at most ``KEEP`` are kept per shape."""
        for a in arrays:
            free = self._free.setdefault(a.shape, [])
            if a.base is None and len(free) < self.KEEP:
                free.append(a)


_POOL = _Pool()


def _sigmoid_(a: np.ndarray) -> None:
    """σ(a) in place, as ½ + ½ tanh(a/2) (numpy's tanh is vectorised; scipy's expit is not)."""
    a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5


def _forward(x_proj: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray) -> tuple[np.ndarray, ...]:
    """Run the recurrence on precomputed input projections.

    Args:
        x_proj: (T, 3H, M) W_ih x_t + b_ih for every step.
        w_hh, b_hh: recurrent weights (3H, H) and bias (3H,).

    Returns:
        hs (T+1, H, M) with hs[0] = 0; gates rz (T, 2H, M) = [r; z], n (T, H, M), and
        gh (T, 3H, M) = W_hh h_{t−1} + b_hh, which the backward pass needs.
    """
    t_len, three_h, m = x_proj.shape
    h_dim = three_h // 3
    hs = _POOL.take(t_len + 1, h_dim, m)
    hs[0] = 0.0
    rz_all = _POOL.take(t_len, 2 * h_dim, m)
    n_all = _POOL.take(t_len, h_dim, m)
    gh_all = _POOL.take(t_len, three_h, m)
    b_col = b_hh[:, None]  # (3H, 1)
    tmp = _POOL.take(h_dim, m)
    for t in range(t_len):
        h, gh, xi, rz, n = hs[t], gh_all[t], x_proj[t], rz_all[t], n_all[t]
        np.matmul(w_hh, h, out=gh)
        gh += b_col
        np.add(xi[: 2 * h_dim], gh[: 2 * h_dim], out=rz)
        _sigmoid_(rz)  # [r; z] = σ(·)
        np.multiply(rz[:h_dim], gh[2 * h_dim:], out=n)
        n += xi[2 * h_dim:]
        np.tanh(n, out=n)  # n = tanh(x_n + r ⊙ (W_hn h + b_hn))
        np.subtract(h, n, out=tmp)
        tmp *= rz[h_dim:]
        np.add(n, tmp, out=hs[t + 1])  # h_t = n + z ⊙ (h_{t−1} − n)
    _POOL.give(tmp)
    return hs, rz_all, n_all, gh_all


def _backward(grad_out: np.ndarray, hs: np.ndarray, rz_all: np.ndarray, n_all: np.ndarray,
              gh_all: np.ndarray, w_hh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BPTT. grad_out (T, H, M) = ∂L/∂h_t; returns ∂L/∂(W_ih x + b_ih) and ∂L/∂(W_hh h + b_hh),
    both (T, 3H, M)."""
    t_len, h_dim, m = grad_out.shape
    d_gi = _POOL.take(t_len, 3 * h_dim, m)
    d_gh = _POOL.take(t_len, 3 * h_dim, m)
    w_hh_t = np.ascontiguousarray(w_hh.T)  # (H, 3H)
    dh = _POOL.take(h_dim, m)  # ∂L/∂h_t through later steps
    dh[:] = 0.0
    dh_t, a, b = (_POOL.take(h_dim, m) for _ in range(3))
    for t in range(t_len - 1, -1, -1):
        r, z = rz_all[t, :h_dim], rz_all[t, h_dim:]
        n, ghn = n_all[t], gh_all[t, 2 * h_dim:]
        gi, gh = d_gi[t], d_gh[t]
        dr, dz, dn = gi[:h_dim], gi[h_dim: 2 * h_dim], gi[2 * h_dim:]
        np.add(grad_out[t], dh, out=dh_t)
        # n-gate pre-activation: ∂h_t/∂n = 1 − z, tanh′ = 1 − n²
        np.subtract(1.0, z, out=b)
        np.multiply(n, n, out=a)
        np.subtract(1.0, a, out=a)
        np.multiply(dh_t, b, out=dn)
        dn *= a
        # z-gate: ∂h_t/∂z = h_{t−1} − n, σ′ = z (1 − z)
        np.subtract(hs[t], n, out=dz)
        dz *= dh_t
        dz *= z
        dz *= b
        # r-gate: ∂n_pre/∂r = W_hn h + b_hn, σ′ = r (1 − r)
        np.subtract(1.0, r, out=a)
        np.multiply(dn, ghn, out=dr)
        dr *= r
        dr *= a
        gh[: 2 * h_dim] = gi[: 2 * h_dim]
        np.multiply(dn, r, out=gh[2 * h_dim:])
        # ∂h_t/∂h_{t−1}: the direct z path plus the path through W_hh
        np.matmul(w_hh_t, gh, out=dh)
        np.multiply(dh_t, z, out=a)
        dh += a
    _POOL.give(dh, dh_t, a, b)
    return d_gi, d_gh


def _project(x_flat: np.ndarray, w_ih: np.ndarray, b_ih: np.ndarray, t_len: int) -> np.ndarray:
    """W_ih x_t + b_ih for all steps at once: x (T·M, I) -> (T, 3H, M)."""
    out = _POOL.take(w_ih.shape[0], x_flat.shape[0])
    np.matmul(w_ih, x_flat.T, out=out)  # (3H, T·M)
    out += b_ih[:, None]
    proj = _swap01(out.reshape(out.shape[0], t_len, -1))
    _POOL.give(out)
    return proj


def _swap01(a: np.ndarray) -> np.ndarray:
    """(A, B, C) -> (B, A, C), a pooled contiguous copy."""
    out = _POOL.take(a.shape[1], a.shape[0], a.shape[2])
    out[:] = a.transpose(1, 0, 2)
    return out


class _GruSequence(torch.autograd.Function):
    """One autograd node for the recurrence: x (T, M, I) -> h_1..h_T (T, M, H)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        _, hs, gates = _run(x, w_ih, w_hh, b_ih, b_hh)
        ctx.save_for_backward(x, w_ih, w_hh)  # autograd's version check: no in-place edits
        ctx.arrays = (hs, *gates)
        return _hidden_states(hs)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_t, w_ih_t, w_hh_t = ctx.saved_tensors
        hs, rz, n, gh = ctx.arrays
        del ctx.arrays
        t_len, m, h_dim = grad_out.shape
        x_flat = x_t.detach().contiguous().numpy().reshape(t_len * m, -1)
        w_ih, w_hh = w_ih_t.detach().numpy(), w_hh_t.detach().numpy()
        g = _POOL.take(t_len, h_dim, m)
        g[:] = grad_out.detach().numpy().transpose(0, 2, 1)  # (T, H, M)
        d_gi, d_gh = _backward(g, hs, rz, n, gh, w_hh)
        flat_gi = _swap01(d_gi)  # (3H, T, M)
        flat_gh = _swap01(d_gh)
        h_prev = _swap01(hs[:-1])  # (H, T, M)
        gi2, gh2 = flat_gi.reshape(3 * h_dim, -1), flat_gh.reshape(3 * h_dim, -1)  # (3H, T·M)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.from_numpy((gi2.T @ w_ih).reshape(t_len, m, -1))
        grad_w_ih = gi2 @ x_flat  # (3H, I)
        grad_w_hh = gh2 @ h_prev.reshape(h_dim, -1).T  # (3H, H)
        grads = (grad_x, torch.from_numpy(grad_w_ih), torch.from_numpy(grad_w_hh),
                 torch.from_numpy(gi2.sum(1)), torch.from_numpy(gh2.sum(1)))
        _POOL.give(g, d_gi, d_gh, flat_gi, flat_gh, h_prev, hs, rz, n, gh)
        return grads


def _run(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
         b_hh: torch.Tensor) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Forward on torch inputs: (x as (T·M, I), hs (T+1, H, M), gates) as numpy arrays."""
    t_len, m, i_dim = x.shape
    x_flat = x.detach().contiguous().numpy().reshape(t_len * m, i_dim)
    x_proj = _project(x_flat, w_ih.detach().numpy(), b_ih.detach().numpy(), t_len)
    hs, *gates = _forward(x_proj, w_hh.detach().numpy(), b_hh.detach().numpy())
    _POOL.give(x_proj)
    return x_flat, hs, tuple(gates)


def _hidden_states(hs: np.ndarray) -> torch.Tensor:
    """hs (T+1, H, M) -> h_1..h_T as a (T, M, H) tensor that owns its memory."""
    return torch.from_numpy(hs[1:].transpose(0, 2, 1).copy())


def gru_sequence_fused(rnn: torch.nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """``rnn``'s weights (one layer, float32) over time-major sequences from a zero state.

    x (T, M, I), whatever ``rnn.batch_first`` says -> hidden states (T, M, H); gradients reach
    ``x`` and the GRU's parameters.
    """
    if rnn.num_layers != 1 or rnn.bidirectional or not rnn.bias:
        raise ValueError("gru_sequence_fused supports one-layer, uni-directional GRUs with bias")
    w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{name}_l0") for name in
                              ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    if x.dtype != torch.float32 or w_ih.dtype != torch.float32:
        raise TypeError(f"gru_sequence_fused is float32 only, got {x.dtype}/{w_ih.dtype}")
    if torch.is_grad_enabled() and (x.requires_grad or w_ih.requires_grad):
        out: torch.Tensor = _GruSequence.apply(x, w_ih, w_hh, b_ih, b_hh)
        return out
    _, hs, gates = _run(x, w_ih, w_hh, b_ih, b_hh)
    out = _hidden_states(hs)
    _POOL.give(hs, *gates)
    return out
