"""Kaleidoscope masked linear layer: shared weights, one learnable soft-threshold mask per agent.

Kaleidoscope (Li et al., "Kaleidoscope: Learnable Masks for Heterogeneous Multi-agent
Reinforcement Learning", NeurIPS 2024, arXiv 2410.08540) keeps one weight matrix ``W`` shared by
all agents and gives agent ``k`` its own threshold logits ``s_k``. Agent ``k`` computes with the
soft-thresholded (STR-style) weight

    W_k = sign(W) ⊙ relu(|W| − σ(s_k))

and the binary mask ``M_k = 1[|W| − σ(s_k) > 0]`` (through a straight-through estimator whose
backward is ``tanh`` of the incoming gradient) feeds the diversity loss and the resets
(``kaleibench.nn.kalei_losses``). Semantics follow the Kaleidoscope reference code.

Shapes: B batch (any number of leading dims), N masks (= agents), I in features, O out features.
No global RNG is used: every random draw takes an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """Return ``generator``, or a fresh CPU generator seeded with 0 when it is ``None``.

    The fallback keeps library code off torch's global RNG; pass the run's own generator to get
    independent draws across layers.
    """
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(0)


def uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    """Draw a CPU float32 tensor from ``U(low, high)`` with an explicit generator."""
    return torch.rand(shape, generator=generator) * (high - low) + low


def linear_init_bound(fan_in: int) -> float:
    """Bound of ``nn.Linear``'s default init, ``kaiming_uniform_(a=√5)`` and its bias init.

    ``gain = √(2 / (1 + a²)) = √(1/3)``, ``bound = √3 · gain / √fan_in = 1 / √fan_in``.
    """
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


def init_linear_(linear: nn.Linear, generator: torch.Generator) -> nn.Linear:
    """Initialise an ``nn.Linear`` in place like PyTorch does, but from ``generator``.

    ``W, b ~ U(−1/√in, 1/√in)`` (the distribution of ``nn.Linear.reset_parameters``).
    """
    bound = linear_init_bound(linear.in_features)
    with torch.no_grad():
        weight = uniform(tuple(linear.weight.shape), -bound, bound, generator)
        linear.weight.copy_(weight)  # (O, I)
        if linear.bias is not None:
            linear.bias.copy_(uniform(tuple(linear.bias.shape), -bound, bound, generator))  # (O,)
    return linear


def make_linear(
    in_features: int, out_features: int, generator: torch.Generator | None = None
) -> nn.Linear:
    """Plain unmasked ``nn.Linear`` initialised from ``generator`` (the ``qmix-1r3`` layer).

    Built with ``skip_init`` so torch's global RNG is never touched. It applies to inputs of shape
    ``(..., I)`` and therefore accepts the same ``(B, N, I)`` inputs as :class:`KaleiLinear`.
    """
    linear = nn.utils.skip_init(nn.Linear, in_features, out_features)
    return init_linear_(linear, default_generator(generator))


def threshold_init(
    shape: tuple[int, ...], scale: float, bias: float, generator: torch.Generator
) -> Tensor:
    """Threshold logits ``s = −(U(0, 1) · scale + bias)``, shape ``shape``.

    With scale = bias = 5, ``s ∈ [−10, −5]`` and ``σ(s) ≤ 0.0067``: the masks start nearly dense.
    """
    return -(torch.rand(shape, generator=generator) * scale + bias)


class StepTanhSTE(torch.autograd.Function):
    """Step function with a ``tanh`` straight-through gradient.

    Forward: ``y = relu(sign(x)) = 1[x > 0]``. Backward: ``∂L/∂x = tanh(∂L/∂y)`` — tanh of the
    *incoming gradient*, independent of ``x`` (a soft-clipped identity estimator).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        """Return ``1[x > 0]`` with the dtype of ``x``."""
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        """Return ``tanh(grad_output)``."""
        return torch.tanh(grad_output)


class KaleiLinear(nn.Module):
    """Linear layer with shared ``W``, ``b`` and one learnable soft-threshold mask per agent.

    Args:
        in_features: Input size I.
        out_features: Output size O.
        n_masks: Number of masks N (one per agent; agent ``k`` uses mask ``k``).
        threshold_init_scale: ``scale`` in ``s = −(U(0,1)·scale + bias)``.
        threshold_init_bias: ``bias`` in the same formula.
        generator: Source of every random draw (``None``: a generator seeded with 0).

    Attributes:
        weight: Shared weight ``W``, shape ``(O, I)``, init like ``nn.Linear``.
        bias: Shared bias ``b``, shape ``(O,)``, never masked.
        sparse_thresholds: Threshold logits ``s``, shape ``(N, O, I)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_masks: int,
        threshold_init_scale: float = 5.0,
        threshold_init_bias: float = 5.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if min(in_features, out_features, n_masks) < 1:
            raise ValueError(
                f"in_features, out_features and n_masks must be >= 1, got "
                f"{in_features}, {out_features}, {n_masks}"
            )
        gen = default_generator(generator)
        self.in_features = in_features
        self.out_features = out_features
        self.n_masks = n_masks
        self.threshold_init_scale = threshold_init_scale
        self.threshold_init_bias = threshold_init_bias
        bound = linear_init_bound(in_features)
        self.weight = nn.Parameter(uniform((out_features, in_features), -bound, bound, gen))
        self.bias = nn.Parameter(uniform((out_features,), -bound, bound, gen))
        shape = (n_masks, out_features, in_features)
        s = threshold_init(shape, threshold_init_scale, threshold_init_bias, gen)
        self.sparse_thresholds = nn.Parameter(s)  # (N, O, I)

    def masked_weights(self) -> Tensor:
        """Soft-thresholded weights ``W_k = sign(W) ⊙ relu(|W| − σ(s_k))`` for every mask.

        Returns:
            Tensor of shape ``(N, O, I)``; differentiable w.r.t. both ``W`` and ``s``.
        """
        threshold = torch.sigmoid(self.sparse_thresholds)  # (N, O, I)
        return torch.sign(self.weight) * torch.relu(self.weight.abs() - threshold)  # (N, O, I)

    def binary_masks(self) -> Tensor:
        """Binary masks ``M_k = STE(|W|.detach() − σ(s_k))`` through :class:`StepTanhSTE`.

        Returns:
            Tensor of shape ``(N, O, I)`` with values in {0, 1}; its gradient reaches ``s`` only.
        """
        margin = self.weight.detach().abs() - torch.sigmoid(self.sparse_thresholds)  # (N, O, I)
        masks: Tensor = StepTanhSTE.apply(margin)
        return masks  # (N, O, I)

    def forward(self, x: Tensor) -> Tensor:
        """Apply agent ``k``'s masked weights to ``x[..., k, :]``.

        ``y[..., k, :] = W_k x[..., k, :] + b``, computed with one einsum over the ``(N, O, I)``
        masked weights; no per-sample ``(B·N, O, I)`` weight tensor is built.

        Args:
            x: Inputs of shape ``(..., N, I)``; axis −2 indexes the agent / mask.

        Returns:
            Outputs of shape ``(..., N, O)``.
        """
        if x.dim() < 2 or x.shape[-2] != self.n_masks or x.shape[-1] != self.in_features:
            raise ValueError(
                f"KaleiLinear expects inputs (..., {self.n_masks}, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        weights = self.masked_weights()  # (N, O, I)
        return torch.einsum("...ni,noi->...no", x, weights) + self.bias  # (..., N, O)

    def extra_repr(self) -> str:
        """Summarise the layer sizes for ``print(module)``."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"n_masks={self.n_masks}"
        )
