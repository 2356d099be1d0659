"""The C kernels give the same floats whatever vector width they are built for.

Each product element is a chain of fused multiply-adds in a fixed order and every element-wise
operation is a plain IEEE float operation (kaleibench/nn/fma_gemm.h, kaleibench/utils/native.py),
so a build for this machine (``-march=native``: AVX-512 or AVX2 tiles) and a build for the
x86-64 baseline (no AVX: the portable loops only) must agree bit for bit."""

from __future__ import annotations

import ctypes
import platform
import subprocess
from pathlib import Path

import pytest
import torch

from kaleibench.nn import native_gru, products
from kaleibench.utils import native

pytestmark = pytest.mark.skipif(
    native.compiler() is None or platform.machine() not in ("x86_64", "AMD64"),
    reason="needs a C compiler on an x86-64 machine")

_P, _I = ctypes.c_void_p, ctypes.c_int64


def _baseline(tmp_path: Path, source: str) -> ctypes.CDLL:
    """``source`` compiled with the kernels' flags, but for the x86-64 baseline."""
    cc = native.compiler()
    assert cc is not None
    flags = ["-march=x86-64" if f == "-march=native" else f for f in native.FLAGS]
    out = tmp_path / (Path(source).stem + "_baseline.so")
    subprocess.run([cc, *flags, "-o", str(out), source], check=True, capture_output=True)
    return ctypes.CDLL(str(out))


def test_the_products_do_not_depend_on_the_vector_width(tmp_path: Path) -> None:
    lib = _baseline(tmp_path, products.KERNELS_SOURCE)
    lib.gemm.argtypes = [_P, _I, _P, _I, _P, _P, _I, _I, _I, _I]
    lib.wgrad.argtypes = [_P, _I, _P, _I, _P, _P, _I, _I, _I, ctypes.c_int]
    assert lib.vector_width() == 0  # the portable loops only
    gen = torch.Generator().manual_seed(0)
    for m, p, n in [(2496, 64, 192), (800, 54, 192), (37, 21, 5), (13, 7, 33)]:
        a, b, bias = (torch.randn(*s, generator=gen) for s in ((m, p), (p, n), (n,)))
        out = torch.empty(m, n)
        lib.gemm(a.data_ptr(), p, b.data_ptr(), n, bias.data_ptr(), out.data_ptr(), n, m, n, p)
        assert torch.equal(out, products.linear(a, b.t().contiguous(), bias)), (m, p, n)
    for r, n, k in [(2496, 192, 64), (800, 5, 64), (300, 33, 19)]:
        d, x = torch.randn(r, n, generator=gen), torch.randn(r, k, generator=gen)
        g, s = torch.empty(n, k), torch.empty(n)
        assert lib.wgrad(d.data_ptr(), n, x.data_ptr(), k, g.data_ptr(), s.data_ptr(), r, n, k,
                         -1) == 0  # fmt: skip
        g_here, s_here = products.weight_grad(d, x, bias=True)
        assert torch.equal(g, g_here) and s_here is not None and torch.equal(s, s_here), (r, n, k)


@pytest.mark.parametrize(("t_len", "m", "h"), [(26, 96, 64), (5, 13, 20)])
def test_the_gru_recurrence_does_not_depend_on_the_vector_width(tmp_path: Path, t_len: int,
                                                                 m: int, h: int) -> None:
    here = native_gru.kernels()
    assert here is not None
    base = _baseline(tmp_path, native_gru.SOURCE)
    base.gru_fwd_seq_in.argtypes = here.gru_fwd_seq_in.argtypes
    base.gru_bwd_seq.argtypes = here.gru_bwd_seq.argtypes
    gen = torch.Generator().manual_seed(h)
    i = h // 2 + 3
    x = torch.randn(t_len, m, i, generator=gen)
    wi_t = (torch.randn(3 * h, i, generator=gen) * 0.3).t().contiguous()
    w = torch.randn(3 * h, h, generator=gen) * 0.2
    w_t = w.t().contiguous()
    b_i, b_h = torch.randn(3 * h, generator=gen), torch.randn(3 * h, generator=gen)
    grad = torch.randn(t_len, m, h, generator=gen)
    results = []
    for lib in (here, base):
        hs, gates = torch.zeros(t_len + 1, m, h), torch.empty(4, t_len, m, h)
        work = torch.empty(2, m, 3 * h)  # held: the kernel writes into it
        lib.gru_fwd_seq_in(x.data_ptr(), i, wi_t.data_ptr(), work[0].data_ptr(), w_t.data_ptr(),
                           b_i.data_ptr(), b_h.data_ptr(), hs.data_ptr(), work[1].data_ptr(),
                           *(gates[j].data_ptr() for j in range(4)), t_len, m, h, 1)
        g = grad.clone()
        d_i, d_h = torch.empty(t_len, m, 3 * h), torch.empty(t_len, m, 3 * h)
        lib.gru_bwd_seq(g.data_ptr(), hs.data_ptr(), *(gates[j].data_ptr() for j in range(4)),
                        d_i.data_ptr(), d_h.data_ptr(), w.data_ptr(), t_len, m, h)
        results.append((hs, gates, g, d_i, d_h))
    for name, a, b in zip(("h", "gates", "dL/dh", "d_gi", "d_gh"), *results, strict=True):
        assert torch.equal(a, b), name
