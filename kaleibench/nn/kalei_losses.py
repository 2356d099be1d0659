"""Kaleidoscope loss terms and mask maintenance (arXiv 2410.08540).

* :func:`mask_diversity_loss` — the |W|-weighted pairwise mask distance, negated (§2.4).
* :class:`AdaptiveCoefficient` — rescales it to ``div_coef`` × the running TD-loss magnitude (§2.5).
* :func:`reset_dead_connections` and :func:`should_reset` — recycle connections pruned in every
  agent's mask (§2.6).

The full objective of the learner is ``loss = td + c * div`` with ``c`` a float from
:class:`AdaptiveCoefficient`. Shapes: N masks (agents), O out features, I in features.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from kaleibench.nn.kalei_linear import (
    KaleiLinear,
    default_generator,
    linear_init_bound,
    threshold_init,
    uniform,
)

LAYER_WEIGHTS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
"""Diversity weights λ_l of fc1-fc4 (deeper layers count more)."""


def mask_diversity_loss(
    layers: Sequence[KaleiLinear], layer_weights: Sequence[float] = LAYER_WEIGHTS
) -> Tensor:
    """Negative weighted pairwise L1 distance between the agents' masks.

    With ``m_{l,k} = M_{l,k} ⊙ |W_l|`` (binary STE mask of agent k in layer l times the detached
    weight magnitude)::

        J = Σ_l λ_l Σ_i Σ_j ‖m_{l,i} − m_{l,j}‖_1        (ordered pairs, i = j terms are 0)
        P = Σ_l O_l · I_l                                (weights of ONE mask)
        L_div = −J / (n (n − 1)) / P

    The gradient reaches the thresholds ``s`` only (through the tanh-STE), never ``W``.

    Args:
        layers: Masked layers, all with the same ``n_masks`` n ≥ 2.
        layer_weights: λ_l, one per layer.

    Returns:
        Scalar tensor ``L_div`` (≤ 0).
    """
    if len(layers) != len(layer_weights) or not layers:
        raise ValueError(
            f"need one weight per layer, got {len(layers)} layers and {len(layer_weights)} weights"
        )
    n = layers[0].n_masks
    if n < 2 or any(layer.n_masks != n for layer in layers):
        raise ValueError(
            f"all layers need the same n_masks >= 2, got {[layer.n_masks for layer in layers]}"
        )
    j_total = layers[0].weight.new_zeros(())
    n_params = 0
    for layer, lam in zip(layers, layer_weights, strict=True):
        m = layer.binary_masks() * layer.weight.detach().abs()  # (N, O, I)
        m_flat = m.flatten(1)  # (N, O·I)
        pair_l1 = torch.cdist(m_flat, m_flat, p=1)  # (N, N)
        j_total = j_total + lam * pair_l1.sum()
        n_params += layer.out_features * layer.in_features
    return -j_total / (n * (n - 1)) / n_params


class AdaptiveCoefficient:
    """Coefficient that scales the diversity loss to a fixed fraction of the TD loss.

    Keeps the last ``maxlen`` values of both losses and returns::

        c = |div_coef · mean(td_hist) / mean(div_hist)|   if mean(div_hist) ≠ 0 else div_coef

    so ``c · L_div`` is about ``div_coef`` × the running TD-loss magnitude. ``c`` is a float:
    no gradient flows through it.

    Args:
        div_coef: Target ratio (0.5 on MPE).
        maxlen: Length of each history deque (100 on MPE).
    """

    def __init__(self, div_coef: float = 0.5, maxlen: int = 100) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        self.div_coef = float(div_coef)
        self.maxlen = int(maxlen)
        self.td_hist: deque[float] = deque(maxlen=self.maxlen)
        self.div_hist: deque[float] = deque(maxlen=self.maxlen)

    def update(self, td_loss: float, div_loss: float) -> float:
        """Append one value of each loss and return the current coefficient ``c``."""
        self.td_hist.append(float(td_loss))
        self.div_hist.append(float(div_loss))
        return self.value()

    def value(self) -> float:
        """``c`` from the current histories (``div_coef`` while the histories are empty)."""
        if not self.div_hist:
            return self.div_coef
        mean_td = sum(self.td_hist) / len(self.td_hist)
        mean_div = sum(self.div_hist) / len(self.div_hist)
        if mean_div == 0:
            return self.div_coef
        return abs(self.div_coef * mean_td / mean_div)

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state for checkpoints: ``div_coef``, ``maxlen``, both histories."""
        return {
            "div_coef": self.div_coef,
            "maxlen": self.maxlen,
            "td_hist": list(self.td_hist),
            "div_hist": list(self.div_hist),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output."""
        self.div_coef = float(state["div_coef"])
        self.maxlen = int(state["maxlen"])
        self.td_hist = deque((float(v) for v in state["td_hist"]), maxlen=self.maxlen)
        self.div_hist = deque((float(v) for v in state["div_hist"]), maxlen=self.maxlen)


def dead_connections(layer: KaleiLinear) -> Tensor:
    """Connections pruned in every mask: ``Σ_k M_k == 0``, shape ``(O, I)`` bool."""
    with torch.no_grad():
        margin = layer.weight.abs() - torch.sigmoid(layer.sparse_thresholds)  # (N, O, I)
        return (margin > 0).sum(dim=0) == 0  # (O, I)


def reset_dead_connections(
    layer: KaleiLinear,
    reset_ratio: float = 0.1,
    reset_scale: float = 5.0,
    reset_bias: float = 5.0,
    generator: torch.Generator | None = None,
) -> int:
    """Re-initialise a random fraction of the connections that every mask has pruned.

    Under ``no_grad``, with ``U`` fresh uniform draws::

        flag = (U(0,1) < reset_ratio) ∧ (Σ_k M_k == 0)                  # (O, I)
        s_k  = flag ? −(U(0,1)·reset_scale + reset_bias) : s_k          # every mask k
        W    = flag ? U(−1/√I, 1/√I) : W                                # nn.Linear's init

    Every unflagged entry of ``W`` and ``s`` stays bit-identical; the bias is untouched. The
    optimiser state is not reset. The generator is consumed identically whatever the flags.

    Returns:
        The number of reset connections.
    """
    gen = default_generator(generator)
    n, out_f, in_f = layer.sparse_thresholds.shape
    device = layer.weight.device
    with torch.no_grad():
        draw = torch.rand((out_f, in_f), generator=gen).to(device)  # (O, I)
        s_new = threshold_init((n, out_f, in_f), reset_scale, reset_bias, gen)  # (N, O, I)
        bound = linear_init_bound(in_f)
        w_new = uniform((out_f, in_f), -bound, bound, gen)  # (O, I)
        flag = (draw < reset_ratio) & dead_connections(layer)  # (O, I)
        s_old = layer.sparse_thresholds
        layer.sparse_thresholds.copy_(torch.where(flag, s_new.to(s_old), s_old))  # (N, O, I)
        layer.weight.copy_(torch.where(flag, w_new.to(layer.weight), layer.weight))  # (O, I)
    return int(flag.sum().item())


def should_reset(t_env: int, last_reset_t: int, reset_interval: int, t_max: int) -> bool:
    """Whether to reset now: ``t_env − last_reset_t > reset_interval`` and
    ``t_max − t_env > reset_interval`` (never in the last interval of training).

    Examples:
        >>> should_reset(200_001, 0, 200_000, 3_000_000)
        True
        >>> should_reset(2_900_000, 0, 200_000, 3_000_000)
        False
    """
    return t_env - last_reset_t > reset_interval and t_max - t_env > reset_interval
