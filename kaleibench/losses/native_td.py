"""C versions of two steps of the Q-learning loss (``td_kernels.c``): same results, one call each.

* :func:`double_q_select` = ``double_q_next_values``'s masked_fill, argmax and gather: a choice
  and a copy, so the floats are the same by construction (tested against the torch operations,
  ties, unavailable actions and NaN included);
* :func:`td_stats` = the update's logged loss statistics (means over filled steps, summed in
  double; logging only, nothing learns from them).

Why: on the learner's batch (32 episodes × 25 steps × 3 agents) each of these torch operations
costs a few microseconds of dispatch for a few hundred elements; together with their views,
masks and the reductions of the statistics they took ~0.15 ms of a ~5 ms QMIX update (AMD EPYC,
family 26). Without the C kernels (no compiler, ``KALEIBENCH_NATIVE=0``) the callers use the
torch operations, which give the same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kaleibench.utils import native

SOURCE = str(Path(__file__).with_name("td_kernels.c"))

_P, _I64 = native.P, native.I64
SIGNATURES: native.Signatures = {
    "double_q_select": ([_P, _I64, _I64, _P, _I64, _I64, _P, _I64, _I64, _P, _I64, _I64, _I64,
                         _I64], None),
    "td_stats": ([_P, _P, _P, _P, _P, _I64, _I64, _P], None),
}


def kernels() -> Any | None:
    """The loaded C library with its argument types declared, or None."""
    return native.load_declared(SOURCE, SIGNATURES)


def _inner_contiguous(a: Tensor) -> bool:
    """Whether a (B, T, N, A) tensor's two inner dimensions are contiguous."""
    return a.stride(3) == 1 and a.stride(2) == a.shape[3]


def double_q_select(q_online: Tensor, q_target: Tensor, avail: Tensor) -> Tensor | None:
    """Q⁻ of the online argmax over available actions, (B, T, N), from (B, T, N, A) inputs (any
    outer strides); None when the C kernels are unavailable or the tensors do not fit them."""
    lib = kernels()
    if (lib is None or q_online.dim() != 4 or q_online.shape != q_target.shape
            or q_online.shape != avail.shape or q_online.dtype != torch.float32
            or q_target.dtype != torch.float32 or avail.dtype != torch.bool
            or not all(_inner_contiguous(a) for a in (q_online, q_target, avail))):
        return None
    b, t, n, a = q_online.shape
    out = torch.empty(b, t, n)
    lib.double_q_select(q_online.data_ptr(), q_online.stride(0), q_online.stride(1),
                        q_target.data_ptr(), q_target.stride(0), q_target.stride(1),
                        avail.data_ptr(), avail.stride(0), avail.stride(1), out.data_ptr(),
                        b, t, n, a)  # fmt: skip
    return out


def td_stats(q_tot: Tensor, y: Tensor, mask: Tensor, q_taken: Tensor,
             reward: Tensor) -> list[float] | None:
    """[mean |Q_tot − y|, mean of the agents' mean taken Q, mean Q_tot, mean y, max |y|,
    max |reward|] over filled steps (means divided by max(Σ mask, 1); maxima 0 without filled
    steps), for (B, T) tensors and q_taken (B, T, N); None without the C kernels."""
    lib = kernels()
    tensors = (q_tot, y, mask, q_taken, reward)
    if lib is None or any(a.dtype != torch.float32 for a in tensors):
        return None
    flat = [a.detach().contiguous() for a in tensors]  # kept alive through the call
    out = torch.empty(6, dtype=torch.float64)
    m = q_tot.numel()
    lib.td_stats(*(a.data_ptr() for a in flat), m, q_taken.numel() // max(m, 1),
                 out.data_ptr())
    return out.tolist()
