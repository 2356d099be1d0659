"""The learner's large float32 matrix products, through oneDNN where torch bundles it.

``torch.mm`` sends a float32 product to MKL's ``sgemm``, and MKL runs its AVX2 code on AMD
processors even where they have AVX-512. oneDNN, which torch also ships, picks its kernels by
instruction set alone. Measured on an AMD EPYC with AVX-512 (family 26), one thread, CPU time:
the GRU's input projection (2496 × 64) · (64 × 192) takes 578 µs through ``torch.mm`` and
259 µs through oneDNN (107 and 237 GFLOP/s); one recurrent step (96 × 64) · (64 × 192)
23.5 and 20 µs. On the learner's forward products (sums of at most 192 terms) the two gave
the same floats bit for bit there; the weight gradients' long sums (thousands of rows) stay
with ``torch.mm``, which reads their transposed operands without a copy.

:func:`linear` is ``x @ w.T (+ bias)`` and falls back to torch's ``mm``/``addmm`` where torch
was built without oneDNN or its entry point fails; the numerics fingerprint records which ran
(:func:`product_facts`). The entry point is torch's own (``torch.ops.mkldnn._linear_pointwise``,
the one its compiler emits for linear layers on the CPU); it takes no autograd graph, so it is
used inside the learner's hand-written autograd nodes only.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


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


def product_facts() -> dict[str, str]:
    """For the numerics fingerprint: ``{}`` when oneDNN computes the products,
    ``{"products": "torch.mm"}`` when the fallback does (other rounding of weight gradients)."""
    return {} if onednn() else {"products": "torch.mm"}
