"""The learner's float32 matrix products: C tiles where they build, else oneDNN or torch.

``torch.mm`` sends a float32 product to MKL's ``sgemm``, and MKL runs its AVX2 code on AMD
processors even where they have AVX-512. Measured on an AMD EPYC with AVX-512 (family 26), one
thread, CPU time, the learner's main product (2496 × 64) · (64 × 192): 107 GFLOP/s through
``torch.mm``, 235 through oneDNN (which torch also ships, and which picks its kernels by
instruction set alone), 251 through the C tiles of ``fma_gemm.h`` (``product_kernels.c``).
A oneDNN call also costs ~10 µs before any arithmetic (3 rows: 11.7 µs against 2.9 µs for
``torch.mm``), which the C call does not, and oneDNN wants the operands of a weight gradient
copied into transposed layouts, which the C tiles read through strides.

* :func:`linear` = x · wᵀ (+ bias), e.g. a layer's forward pass;
* :func:`matmul` = a · b, e.g. a layer's input gradient ∂L/∂y · W;
* :func:`weight_grad` = (dᵀ x, Σ_r d[r]), a layer's parameter gradients over all its rows;
  each element summed in two levels (chunks of 128 rows), which rounds no worse than MKL's
  blocked sums (a plain running sum over thousands of rows would).

Every element of a C product is a chain of fused multiply-adds in a fixed order, so the result
does not depend on the vector width. Where the C kernels cannot be built (no compiler, or
``KALEIBENCH_NATIVE=0``) the products go through oneDNN (``torch.ops.mkldnn._linear_pointwise``,
the op torch's compiler emits for linear layers on the CPU; products of ≥ 2 MFLOP) or
``torch.mm``; they round differently, and the numerics fingerprint records which ran
(:func:`product_facts`). None of these take part in autograd: they are used inside the
learner's hand-written autograd nodes.
"""

from __future__ import annotations

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

    ``x`` may be a column-sliced view (rows a fixed stride apart). In C where the kernels build
    (wᵀ is copied, a small tensor), else through oneDNN for products of at least
    :data:`ONEDNN_MIN_FLOPS`, else ``torch.mm``.
    """
    lib = _kernels()
    if lib is not None:
        return _gemm(lib, x, transposed(w), bias)
    if onednn() and 2 * x.shape[0] * x.shape[1] * w.shape[0] >= ONEDNN_MIN_FLOPS:
        y: Tensor = torch.ops.mkldnn._linear_pointwise(x.detach(), w.detach(),
                                                        None if bias is None else bias.detach(),
                                                        "none", [], "")  # fmt: skip
    else:
        with torch.no_grad():
            y = torch.mm(x, w.t()) if bias is None else torch.addmm(bias, x, w.t())
    return y


def linear_stacked(x: Tensor, ws: list[Tensor] | tuple[Tensor, ...],
                   biases: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """x · [w₁; w₂; …]ᵀ + [b₁; b₂; …]: several layers that read the same input as one product,
    their outputs side by side (M, ΣN); the same floats as :func:`linear` with the weights and
    biases concatenated, without building the concatenated weight first."""
    lib = _kernels()
    if lib is None:
        return linear(x, torch.cat(list(ws)), torch.cat(list(biases)))
    return _gemm(lib, x, transposed(*ws), torch.cat(list(biases)))


_P, _I64, _INT = native.P, native.I64, native.INT
SIGNATURES: native.Signatures = {
    "wgrad": ([_P, _I64, _P, _I64, _P, _P, _I64, _I64, _I64, _INT], _INT),
    "gemm": ([_P, _I64, _P, _I64, _P, _P, _I64, _I64, _I64, _I64], None),
    "transpose": ([_P, _I64, _I64, _I64, _P, _I64], None),
}


def transposed(*ws: Tensor) -> Tensor:
    """[w₁ᵀ | w₂ᵀ | …] (K, ΣN) for weights w_i (N_i, K): each layer's transpose side by side,
    as the C tiles read a product's right operand (one layer: its plain transpose). A copy, in
    C where the kernels build (blocked; 1-2 µs where torch's strided copy of a 192 × 64 weight
    took 7.7), else torch's."""
    lib = _kernels()
    if lib is None or any(w.dtype != torch.float32 or w.stride(-1) != 1 for w in ws):
        return torch.cat([w.detach().t() for w in ws], dim=1).contiguous()
    k, n_total = ws[0].shape[1], sum(w.shape[0] for w in ws)
    out = torch.empty(k, n_total)
    col = 0
    for w in ws:
        if w.shape[1] != k:
            raise ValueError(f"transposed needs weights of one input width, got {w.shape[1]} "
                             f"and {k}")
        lib.transpose(w.data_ptr(), w.shape[0], k, w.stride(0),
                      out.data_ptr() + out.element_size() * col, n_total)  # column block
        col += w.shape[0]
    return out


def _kernels() -> Any | None:
    """The loaded ``product_kernels.c`` with its argument types declared, or None."""
    return native.load_declared(KERNELS_SOURCE, SIGNATURES)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a (M, P) · b (P, N) -> (M, N), without autograd; in C where the kernels build, else
    ``torch.mm``. For products whose right operand is row-major as it is, such as a layer's
    input gradient ∂L/∂y · W."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul needs a (M, P) and b (P, N), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")  # fmt: skip
    lib = _kernels()
    if lib is None:
        with torch.no_grad():
            return torch.mm(a, b)
    return _gemm(lib, a, b, None)


def _gemm(lib: Any, a: Tensor, b: Tensor, bias: Tensor | None) -> Tensor:
    """a (M, P) · b (P, N) [+ bias] through the C tiles, into a new tensor."""
    a, b = _rows_unit_stride(a), _rows_unit_stride(b)
    if bias is not None and not bias.is_contiguous():
        bias = bias.detach().contiguous()
    out = torch.empty(a.shape[0], b.shape[1])
    lib.gemm(a.data_ptr(), a.stride(0), b.data_ptr(), b.stride(0),
             None if bias is None else bias.data_ptr(), out.data_ptr(), out.stride(0),
             a.shape[0], b.shape[1], a.shape[1])  # fmt: skip
    return out


def _rows_unit_stride(a: Tensor) -> Tensor:
    """``a`` (2-d, float32) itself when its columns are adjacent, else a contiguous copy (only
    its memory is read: no autograd involvement either way)."""
    if a.stride(1) == 1 and a.dtype == torch.float32:
        return a
    return a.detach().contiguous().float()


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
    """For the numerics fingerprint: ``{}`` when the C kernels compute the products; else which
    fallback runs (other rounding)."""
    facts = native.native_facts(KERNELS_SOURCE)
    if facts:
        facts["products"] = "oneDNN" if onednn() else "torch.mm"
    return facts
