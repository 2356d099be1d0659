"""The learner's matrix products (kaleibench/nn/products.py): the C tiles where they build,
else oneDNN where it runs, else torch's ``mm``; the same product any way."""

from __future__ import annotations

import pytest
import torch

from kaleibench.nn import products
from kaleibench.utils.fingerprint import numerics_fingerprint


@pytest.mark.parametrize("shape", [(3, 64, 192), (96, 64, 192), (2496, 64, 192), (800, 54, 192)])
def test_linear_is_the_product(shape: tuple[int, int, int]) -> None:
    m, k, n = shape
    gen = torch.Generator().manual_seed(m)
    x, w, b = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen), torch.randn(n)
    torch.testing.assert_close(products.linear(x, w), x @ w.t(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(products.linear(x, w, b), x @ w.t() + b, rtol=1e-5, atol=1e-4)
    wide = torch.randn(m, k + 9, generator=gen)  # a column slice, as the mixer passes
    torch.testing.assert_close(products.linear(wide[:, 4:4 + k], w), wide[:, 4:4 + k] @ w.t(),
                               rtol=1e-5, atol=1e-4)  # fmt: skip


@pytest.mark.parametrize("path", ["C", "oneDNN", "torch"])
@pytest.mark.parametrize("shape", [(3, 64, 192), (300, 64, 192), (800, 54, 19)])
def test_every_path_of_linear_is_the_product(path: str, shape: tuple[int, int, int],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if path != "C":
        monkeypatch.setattr(products, "_kernels", lambda: None)
    if path == "torch":
        monkeypatch.setattr(products, "onednn", lambda: False)
    elif path == "oneDNN" and not products.onednn():
        pytest.skip("torch was built without oneDNN")
    m, k, n = shape
    gen = torch.Generator().manual_seed(n)
    x, w, b = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen), torch.randn(n)
    ref = x.double() @ w.double().t() + b.double()
    torch.testing.assert_close(products.linear(x, w, b).double(), ref, rtol=1e-5, atol=1e-5 * k)


def test_small_products_stay_with_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the C kernels: a oneDNN call's fixed cost is not worth it on small products."""
    monkeypatch.setattr(products, "_kernels", lambda: None)
    calls: list[tuple[int, ...]] = []
    real = torch.ops.mkldnn._linear_pointwise

    class Spy:
        def __call__(self, x: torch.Tensor, *rest: object) -> torch.Tensor:
            calls.append(tuple(x.shape))
            return real(x, *rest)  # type: ignore[no-any-return]

    monkeypatch.setattr(products, "onednn", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Spy())
    products.linear(torch.randn(3, 64), torch.randn(192, 64))
    assert calls == []  # 74 kFLOP: below the threshold
    products.linear(torch.randn(200, 64), torch.randn(192, 64))
    assert calls == [(200, 64)]


def test_without_onednn_torch_computes_and_the_fingerprint_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(products, "_kernels", lambda: None)
    monkeypatch.setattr(products.native, "native_facts",
                        lambda source: {"product_kernels.c": "unavailable"}
                        if source == products.KERNELS_SOURCE else {})  # fmt: skip
    via_onednn = numerics_fingerprint()
    monkeypatch.setattr(products, "onednn", lambda: False)
    x, w = torch.randn(300, 64), torch.randn(192, 64)
    assert torch.equal(products.linear(x, w), torch.mm(x, w.t()))
    without = numerics_fingerprint()
    assert without["native"]["products"] == "torch.mm"
    assert without["hash"] != via_onednn["hash"]


def _wgrad_reference(d: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dᵀ x and Σ_r d[r] in float64."""
    return d.double().t() @ x.double(), d.double().sum(0)


@pytest.mark.parametrize("shape", [(2496, 192, 64), (2496, 64, 21), (800, 192, 54), (2496, 5, 64),
                                   (800, 1, 32), (37, 17, 3), (129, 33, 19)])
def test_weight_grad_is_d_transposed_times_x(shape: tuple[int, int, int]) -> None:
    r, n, k = shape
    gen = torch.Generator().manual_seed(r + n + k)
    d, x = torch.randn(r, n + 3, generator=gen)[:, 2:2 + n], torch.randn(r, k + 5, generator=gen)
    x = x[:, 1:1 + k]  # both column slices, as the mixer passes them
    g, b = products.weight_grad(d, x, bias=True)
    g_ref, b_ref = _wgrad_reference(d, x)
    assert b is not None and g.shape == (n, k) and b.shape == (n,)
    scale = r ** 0.5  # the sums' typical size
    torch.testing.assert_close(g.double(), g_ref, rtol=0, atol=2e-6 * scale)
    torch.testing.assert_close(b.double(), b_ref, rtol=0, atol=2e-6 * scale)
    assert products.weight_grad(d, x)[1] is None


def test_weight_grad_rounds_like_a_blocked_product() -> None:
    """The two-level sum (chunks of 128 rows) keeps the error of long sums near torch's. A plain
    running sum over these 20,000 rows of positive terms is off by ~6.5e-6 (measured: 6.3e-6 for
    the bias, 6.6e-6 for G); the two-level sums by 4.5e-7 and 6.8e-7, torch by 1.2e-7 (sum) and
    5.1e-7 (mm)."""
    gen = torch.Generator().manual_seed(5)
    d, x = torch.rand(20000, 64, generator=gen), torch.rand(20000, 16, generator=gen)
    g_ref, b_ref = _wgrad_reference(d, x)
    g, b = products.weight_grad(d, x, bias=True)
    assert b is not None
    err = float(((g.double() - g_ref).abs() / g_ref).max())
    err_b = float(((b.double() - b_ref).abs() / b_ref).max())
    err_mm = float(((torch.mm(d.t(), x).double() - g_ref).abs() / g_ref).max())
    assert err < max(2 * err_mm, 1e-6), (err, err_mm)
    assert err_b < 1e-6


@pytest.mark.parametrize("shape", [(300, 21, 19), (300, 40, 64), (300, 64, 5), (7, 3, 2)])
def test_weight_grad_orientations_and_loops_give_the_same_floats(
        shape: tuple[int, int, int]) -> None:
    """Its two loop orders, and the vector tiles against the portable loop, do the same
    operations in the same order per element: equal bit for bit."""
    r, n, k = shape
    gen = torch.Generator().manual_seed(n)
    d, x = torch.randn(r, n, generator=gen), torch.randn(r, k, generator=gen)
    g0, _ = products.weight_grad(d, x, orient=0)
    g1, _ = products.weight_grad(d, x, orient=1)
    assert torch.equal(g0, g1)
    perm = torch.randperm(n, generator=gen)  # moves columns between tiles and the leftover loop
    assert torch.equal(products.weight_grad(d[:, perm], x, orient=0)[0], g0[perm])
    perm_k = torch.randperm(k, generator=gen)
    assert torch.equal(products.weight_grad(d, x[:, perm_k], orient=1)[0], g0[:, perm_k])


@pytest.mark.parametrize("shape", [(300, 192, 64), (129, 5, 7), (256, 33, 3)])
def test_weight_grad_bias_is_the_two_level_running_sum(shape: tuple[int, int, int]) -> None:
    """b = Σ over chunks of 128 rows (in order) of each chunk's running sum in row order, in
    float32: bit for bit, whichever orientation computes G."""
    r, n, k = shape
    gen = torch.Generator().manual_seed(r)
    d, x = torch.randn(r, n + 2, generator=gen)[:, 1:1 + n], torch.randn(r, k, generator=gen)
    expected = torch.zeros(n)
    for c in range(0, r, 128):
        part = torch.zeros(n)
        for row in d[c:c + 128]:
            part = part + row
        expected = expected + part
    for orient in (0, 1):
        b = products.weight_grad(d, x, bias=True, orient=orient)[1]
        assert b is not None and torch.equal(b, expected)


def test_weight_grad_refuses_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="weight_grad needs d"):
        products.weight_grad(torch.randn(5, 3), torch.randn(4, 2))


def test_without_the_kernels_torch_computes_weight_grads_and_the_fingerprint_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with_it = numerics_fingerprint()
    monkeypatch.setattr(products, "_kernels", lambda: None)
    monkeypatch.setattr(products.native, "native_facts",
                        lambda source: {"product_kernels.c": "unavailable"}
                        if source == products.KERNELS_SOURCE else {})  # fmt: skip
    d, x = torch.randn(300, 7), torch.randn(300, 9)
    g, b = products.weight_grad(d, x, bias=True)
    assert torch.equal(g, torch.mm(d.t(), x)) and b is not None and torch.equal(b, d.sum(0))
    without = numerics_fingerprint()
    assert without["native"]["product_kernels.c"] == "unavailable"
    assert without["hash"] != with_it["hash"]


def test_transposed_is_the_transpose_side_by_side() -> None:
    gen = torch.Generator().manual_seed(9)
    for shapes in ([(192, 64)], [(5, 64)], [(17, 33)], [(64, 54), (64, 54), (32, 54), (32, 54)]):
        ws = [torch.randn(*s, generator=gen) for s in shapes]
        assert torch.equal(products.transposed(*ws), torch.cat([w.t() for w in ws], dim=1))
    wide = torch.randn(40, 70, generator=gen)
    view = wide[3:20, 5:50]  # rows 70 floats apart
    assert torch.equal(products.transposed(view), view.t().contiguous())
    with pytest.raises(ValueError, match="one input width"):
        products.transposed(torch.randn(4, 3), torch.randn(4, 5))


def test_linear_stacked_equals_linear_of_the_concatenation() -> None:
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(800, 54, generator=gen)
    ws = [torch.randn(n, 54, generator=gen) for n in (64, 64, 32, 32)]
    bs = [torch.randn(n, generator=gen) for n in (64, 64, 32, 32)]
    assert torch.equal(products.linear_stacked(x, ws, bs),
                       products.linear(x, torch.cat(ws), torch.cat(bs)))
