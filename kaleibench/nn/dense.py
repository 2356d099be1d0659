"""Dense layers applied to every row of the learner's unrolled batch, as one autograd node each.

    y = act(x Wᵀ + b),  act = identity or ReLU;
    ∂L/∂a = ∂L/∂y ⊙ act′,  ∂L/∂W = Σ_r ∂L/∂a_rᵀ x_r,  ∂L/∂b = Σ_r ∂L/∂a_r,  ∂L/∂x = ∂L/∂a · W.

Why: ``nn.Linear`` on the unroll's 2,496 rows sends its forward product and both backward
products to MKL, which runs its AVX2 code on AMD processors with AVX-512. Here they go through
:func:`~kaleibench.nn.products.linear`, :func:`~kaleibench.nn.products.weight_grad` and
:func:`~kaleibench.nn.products.matmul` (the C tiles of ``fma_gemm.h`` where they build), and the
ReLU's mask is applied inside the node. Measured (AMD EPYC, family 26): fc1's forward and
backward 0.31 → 0.18 ms per update. Same function; the rounding of the sums differs from
torch's (tests compare against ``nn.Linear`` to float tolerance).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kaleibench.nn.products import linear, matmul, weight_grad


class DenseRows(torch.autograd.Function):
    """x (R, I) -> act(x Wᵀ + b) (R, O); gradients for x (when asked), W and b."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor, relu: bool) -> Tensor:
        x = x.contiguous()
        y = linear(x, w, b)
        if relu:
            y.clamp_min_(0.0)
        ctx.relu = relu
        ctx.save_for_backward(x, w, y)
        return y

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, w, y = ctx.saved_tensors
        if ctx.relu:  # ReLU′ = 1 where the output is positive, 0 elsewhere (also at 0);
            # torch's own ReLU backward op (torch.where with a scalar took 30× longer here)
            gy = torch.ops.aten.threshold_backward(gy, y, 0.0)
        grad_w, grad_b = weight_grad(gy, x, bias=True)
        grad_x = matmul(gy.contiguous(), w.detach()) if ctx.needs_input_grad[0] else None
        return grad_x, grad_w, grad_b, None


def dense(layer: nn.Linear, x: Tensor, relu: bool = False) -> Tensor:
    """``act(layer(x))`` over x (..., I), any leading shape, as one node (see the module
    docstring); float32 layers with a bias only."""
    if layer.bias is None or x.dtype != torch.float32 or layer.weight.dtype != torch.float32:
        out = layer(x)
        return torch.relu(out) if relu else out
    lead = x.shape[:-1]
    rows = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() and (x.requires_grad or layer.weight.requires_grad
                                    or layer.bias.requires_grad):
        y: Tensor = DenseRows.apply(rows, layer.weight, layer.bias, relu)
    else:  # the node's forward pass without its autograd set-up (the target network's pass)
        y = linear(rows, layer.weight, layer.bias)
        if relu:
            y.clamp_min_(0.0)
    return y.view(*lead, y.shape[-1])
