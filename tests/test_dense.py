"""Dense layers over the unroll's rows as one node (kaleibench/nn/dense.py) and the C product
behind their input gradient (kaleibench/nn/products.py: matmul)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kaleibench.nn import products
from kaleibench.nn.dense import dense


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(("lead", "i_dim", "o_dim"), [((26, 32, 3), 21, 64), ((26, 32, 3), 64, 5),
                                                       ((4, 7), 3, 17)])
def test_dense_equals_the_layer_and_its_gradients(relu: bool, lead: tuple[int, ...], i_dim: int,
                                                  o_dim: int) -> None:
    gen = torch.Generator().manual_seed(i_dim * o_dim)
    layer = nn.Linear(i_dim, o_dim)
    x = torch.randn(*lead, i_dim, generator=gen, requires_grad=True)
    weight = torch.randn(*lead, o_dim, generator=gen)  # a non-trivial ∂L/∂y

    def run(fn: object) -> list[torch.Tensor]:
        x.grad = None
        layer.zero_grad()
        y = fn()  # type: ignore[operator]
        (y * weight).sum().backward()
        assert x.grad is not None and layer.weight.grad is not None and layer.bias.grad is not None
        return [y.detach(), x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()]

    ref = run(lambda: torch.relu(layer(x)) if relu else layer(x))
    new = run(lambda: dense(layer, x, relu=relu))
    assert new[0].shape == ref[0].shape
    for name, a, b in zip(("y", "x", "W", "b"), ref, new, strict=True):
        scale = max(1.0, float(a.abs().max()))
        torch.testing.assert_close(b, a, rtol=1e-5, atol=2e-6 * scale, msg=name)
    if relu:
        assert bool((new[0] == 0).any()) and bool((new[0] > 0).any())  # both branches ran


def test_dense_without_an_input_gradient_trains_the_layer() -> None:
    layer = nn.Linear(5, 4)
    dense(layer, torch.randn(10, 5), relu=True).sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None


def test_dense_leaves_other_layers_to_torch() -> None:
    layer = nn.Linear(3, 2).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(dense(layer, x, relu=True), torch.relu(layer(x)))
    no_bias = nn.Linear(3, 2, bias=False)
    x32 = torch.randn(4, 3)
    assert torch.equal(dense(no_bias, x32), no_bias(x32))


@pytest.mark.parametrize("shape", [(2496, 5, 64), (800, 96, 64), (13, 7, 21), (96, 192, 64),
                                   (1, 1, 1)])
def test_matmul_is_the_product(shape: tuple[int, int, int]) -> None:
    m, p, n = shape
    gen = torch.Generator().manual_seed(m + p + n)
    a, b = torch.randn(m, p + 2, generator=gen)[:, 1:1 + p], torch.randn(p, n, generator=gen)
    out = products.matmul(a, b)
    ref = a.double() @ b.double()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6 * p)
    perm = torch.randperm(n, generator=gen)  # columns between the vector tiles and the loop
    assert torch.equal(products.matmul(a, b[:, perm]), out[:, perm])


def test_matmul_refuses_mismatched_shapes_and_falls_back_to_torch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="matmul needs"):
        products.matmul(torch.randn(3, 4), torch.randn(5, 2))
    monkeypatch.setattr(products, "_kernels", lambda: None)
    a, b = torch.randn(6, 4), torch.randn(4, 3)
    assert torch.equal(products.matmul(a, b), torch.mm(a, b))
