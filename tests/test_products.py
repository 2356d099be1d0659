"""The learner's matrix products (kaleibench/nn/products.py): oneDNN where it runs, torch's
``mm`` otherwise, the same product either way."""

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


def test_small_products_stay_with_torch(monkeypatch: pytest.MonkeyPatch) -> None:
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
    runs_here = products.onednn()
    with_it = numerics_fingerprint()
    monkeypatch.setattr(products, "onednn", lambda: False)
    x, w = torch.randn(300, 64), torch.randn(192, 64)
    assert torch.equal(products.linear(x, w), torch.mm(x, w.t()))
    without = numerics_fingerprint()
    assert without["native"]["products"] == "torch.mm"
    if runs_here:
        assert "products" not in with_it.get("native", {})
        assert without["hash"] != with_it["hash"]
