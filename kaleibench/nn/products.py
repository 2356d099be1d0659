"""The learner's large float32 matrix products, through oneDNN where torch bundles it.

``torch.mm`` sends a float32 product to MKL's ``sgemm``, and MKL runs its AVX2 code on AMD
processors even where they have AVX-512. oneDNN, which torch also ships, picks its kernels by
instruction set alone. Measured on an AMD EPYC with AVX-512 (family 26), one thread, CPU time:
the GRU's input projection (2496 × 64) · (64 × 192) takes 578 µs through ``torch.mm`` and
259 µs through oneDNN (107 and 237 GFLOP/s); one recurrent step (96 × 64) · (64 × 192)
23.5 and 20 µs. On the learner's forward products (sums of at most 192 terms) the two gave
the same floats bit for bit there; the weight gradients' long sums (thousands of rows) stay
with neither: :func:`weight_grad` computes them in C (``product_kernels.c``), reading both
operands in the row layout they already have, at about oneDNN's rate (2496 rows, 192 × 64:
269 µs against ``torch.mm``'s 643 µs), and sums each element in two levels (chunks of 128 rows),
which rounds no worse than MKL's blocked sums.

:func:`linear` is ``x @ w.T (+ bias)`` and falls back to torch's ``mm``/``addmm`` where torch
was built without oneDNN or its entry point fails; the numerics fingerprint records which ran
(:func:`product_facts`). The entry point is torch's own (``torch.ops.mkldnn._linear_pointwise``,
the one its compiler emits for linear layers on the CPU); it takes no autograd graph, so it is
used inside the learner's hand-written autograd nodes only.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kaleibench.utils import native

KERNELS_SOURCE = str(Path(__file__).with_name("product_kernels.c"))


@lru_cache(maxsize=1)
def onednn() -> bool:
    """Whether oneDNN's linear runs here and gives torch's result on a small probe."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*s, generator=gen) for s in ((5, 7), (3, 7), (3,)))
        out = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        return bool(torch.allclose(out, torch.addmm(b, x, w.t()), rtol=1e-5, atol=1e-5))
    except (RuntimeError, AttributeError, TypeError):
        return False


ONEDNN_MIN_FLOPS = 2_000_000
"""Smallest product (2·M·K·N) sent to oneDNN. A oneDNN call costs ~10 µs more than MKL's
before any arithmetic (measured: 3 × 64 · 64 × 192 takes 11.7 µs against 2.9 µs), so small
products (acting, a few episodes' target pass) stay with ``torch.mm``: at N = 192, K = 64
the two break even near 80 rows."""


def linear(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (M, K) · w (N, K)ᵀ [+ bias (N,)] -> a new (M, N) tensor, without autograd.

    ``x`` may be a column-sliced view (rows contiguous). Which library computes a product
    depends only on its shape and on this machine (see :data:`ONEDNN_MIN_FLOPS`).
    """
    if onednn() and 2 * x.shape[0] * x.shape[1] * w.shape[0] >= ONEDNN_MIN_FLOPS:
        out: Tensor = torch.ops.mkldnn._linear_pointwise(x.detach(), w.detach(),
                                                          None if bias is None else bias.detach(),
                                                          "none", [], "")  # fmt: skip
        return out
    with torch.no_grad():
        return torch.mm(x, w.t()) if bias is None else torch.addmm(bias, x, w.t())


def _kernels() -> Any | None:
    """The loaded ``product_kernels.c`` with its argument types declared, or None."""
    lib = native.load(KERNELS_SOURCE)
    if lib is not None and lib.wgrad.argtypes is None:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.wgrad.argtypes = [p, i64, p, i64, p, p, i64, i64, i64, ctypes.c_int]
        lib.wgrad.restype = ctypes.c_int
        lib.gemm.argtypes = [p, i64, p, i64, p, i64, i64, i64, i64]
        lib.gemm.restype = None
    return lib


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a (M, P) · b (P, N) -> a new (M, N) tensor, without autograd; in C where the kernels
    build (each element a fused multiply-add chain in a fixed order), else ``torch.mm``. For
    products with a row-major right operand, such as a layer's input gradient ∂L/∂y · W, which
    oneDNN would take only after copying W transposed."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul needs a (M, P) and b (P, N), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")  # fmt: skip
    lib = _kernels()
    if lib is None:
        with torch.no_grad():
            return torch.mm(a, b)
    a, b = _rows_unit_stride(a), _rows_unit_stride(b)
    out = torch.empty(a.shape[0], b.shape[1])
    lib.gemm(a.data_ptr(), a.stride(0), b.data_ptr(), b.stride(0), out.data_ptr(), out.stride(0),
             a.shape[0], b.shape[1], a.shape[1])  # fmt: skip
    return out


def _rows_unit_stride(a: Tensor) -> Tensor:
    """``a`` (2-d, float32) itself when its columns are adjacent, else a contiguous copy."""
    a = a.detach()
    return a if a.stride(1) == 1 and a.dtype == torch.float32 else a.contiguous().float()


def weight_grad(d: Tensor, x: Tensor, bias: bool = False,
                orient: int = -1) -> tuple[Tensor, Tensor | None]:
    """A linear layer's parameter gradients from all its rows at once, without autograd.

    d (R, N) = ∂L/∂(output rows), x (R, K) = the input rows -> (G (N, K) = dᵀ x, and when
    ``bias`` b (N,) = Σ_r d[r]). Either may be a column slice (rows a fixed stride apart). In C
    where the kernels build (see the module docstring), else ``torch.mm`` and ``sum``.
    ``orient`` (tests only) forces the kernel's loop orientation, which changes no result.
    """
    if d.dim() != 2 or x.dim() != 2 or d.shape[0] != x.shape[0]:
        raise ValueError(f"weight_grad needs d (R, N) and x (R, K), got {tuple(d.shape)} and "
                         f"{tuple(x.shape)}")  # fmt: skip
    lib = _kernels()
    if lib is None:
        with torch.no_grad():
            return torch.mm(d.t(), x), (d.sum(0) if bias else None)
    d, x = _rows_unit_stride(d), _rows_unit_stride(x)
    r, n = d.shape
    k = x.shape[1]
    g = torch.empty(n, k)
    b = torch.empty(n) if bias else None
    status = lib.wgrad(d.data_ptr(), d.stride(0), x.data_ptr(), x.stride(0), g.data_ptr(),
                       None if b is None else b.data_ptr(), r, n, k, orient)  # fmt: skip
    if status != 0:
        raise MemoryError(f"product_kernels.c could not allocate its {k} × {n} work buffer")
    return g, b


def product_facts() -> dict[str, str]:
    """For the numerics fingerprint: ``{}`` when oneDNN computes the products and the C kernels
    the weight gradients; else which fallback runs (other rounding)."""
    facts = {} if onednn() else {"products": "torch.mm"}
    return {**facts, **native.native_facts(KERNELS_SOURCE)}
