"""MINE statistics network and the ALMA+MINE allocation regulariser.

MINE: Belghazi et al., ICML 2018, arXiv 1801.04062, in the Jensen-Shannon Fenchel-dual form that
RACE (Li et al., ICML 2023) uses. ALMA: Iqbal, Costales, Sha, NeurIPS 2022, arXiv 2206.07505.

The MI is estimated between each active agent's allocation embedding and the masked mean of the
*active* task embeddings, from the same policy pass that the amortisation loss uses (no second
pass), and returned as a tensor so that its gradient reaches the policy. As in RACE, the
statistics network trains on the unweighted MI loss with its own Adam optimiser; ``mi_weight``
scales only the gradient that flows back into the policy's shared encoder (a gradient-scaling
identity on the two embeddings that feed the statistics network). A weight inside the policy's
own loss would also shrink the statistics network's gradient below RMSprop's ε and leave the
term with no effect at all. Shapes: M decision points, N agents, K subtasks, D width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kaleibench.losses.mine import fenchel_dual_loss
from kaleibench.nn.allocation import AllocOutput


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``scale`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged, with its gradient multiplied by ``scale`` on the way back."""
    out: torch.Tensor = _ScaleGrad.apply(x, scale)
    return out


class Mine(nn.Module):
    """``T(x, y)`` as ⟨e_x(x), e_y(y)⟩ with two-layer e_x and one-layer e_y (leaky ReLU)."""

    def __init__(self, x_dim: int, y_dim: int, embed_dim: int = 128) -> None:
        super().__init__()
        self.l1 = nn.Linear(x_dim, embed_dim)
        self.l2 = nn.Linear(embed_dim, embed_dim)
        self.l3 = nn.Linear(y_dim, embed_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """JSD loss (M,) and positive-pair term (M,) of M paired samples x (M, X), y (M, Y)."""
        act = nn.functional.leaky_relu
        e_x = act(self.l2(act(self.l1(x))))  # (M, H)
        e_y = act(self.l3(y))  # (M, H)
        return fenchel_dual_loss(e_x, e_y)


def active_task_mean(task_embeds: torch.Tensor, task_mask: torch.Tensor) -> torch.Tensor:
    """``g = Σ_k m_k t_k / Σ_k m_k``: mean over active subtasks only, (M, K, D) -> (M, D)."""
    m = task_mask.float()[..., None]  # (M, K, 1)
    return (task_embeds * m).sum(1) / m.sum(1).clamp_min(1.0)


class MineRegulariser(nn.Module):
    """``L_MI = (1/|A|) Σ_{i∈A} Σ_m w_m L_JSD(a_{m,i}, g_m) / Σ_m w_m`` with its own optimiser.

    The returned loss is unweighted; the encoder receives ``mi_weight`` × its gradient.
    """

    grad_ratio_key = "alloc/mi_grad_ratio"

    def __init__(self, dim: int, embed_dim: int = 128, mi_weight: float = 1e-3,
                 detach_global: bool = False, lr: float = 5e-4, grad_norm_clip: float = 10.0
                 ) -> None:
        super().__init__()
        self.mine = Mine(dim, dim, embed_dim)
        self.mi_weight, self.detach_global = mi_weight, detach_global
        self.lr, self.grad_norm_clip = lr, grad_norm_clip
        self._opt: torch.optim.Adam | None = None

    @property
    def optimiser(self) -> torch.optim.Adam:
        """Adam over the statistics network (built lazily, after the learner's re-init)."""
        if self._opt is None:
            self._opt = torch.optim.Adam(self.mine.parameters(), lr=self.lr)
        return self._opt

    def alloc_loss(self, out: AllocOutput, task_mask: torch.Tensor, agent_mask: torch.Tensor,
                   dp_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The MI loss tensor (unweighted; see the class) and its metrics.

        Args:
            out: the policy pass (agent_embeds (M, N, D), task_embeds (M, K, D));
            task_mask: (M, K) active subtasks; agent_mask: (M, N) active agents;
            dp_mask: (M,) decision points used.
        """
        g = active_task_mean(out.task_embeds, task_mask)  # (M, D)
        g = g.detach() if self.detach_global else scale_grad(g, self.mi_weight)
        agents = scale_grad(out.agent_embeds, self.mi_weight)  # (M, N, D)
        mi_loss = agents.new_zeros(())
        e_pos = agents.new_zeros(())
        n_active = 0
        for i in range(agents.shape[1]):  # per agent: no same-sample false negatives
            w = dp_mask * agent_mask[:, i].float()  # (M,)
            if w.sum() <= 0:
                continue
            loss_i, pos_i = self.mine(agents[:, i], g)  # (M,), (M,)
            mi_loss = mi_loss + (loss_i * w).sum() / w.sum()
            e_pos = e_pos + (pos_i.detach() * w).sum() / w.sum()
            n_active += 1
        mi_loss = mi_loss / max(n_active, 1)
        stats = {"alloc/mi_loss": float(mi_loss.detach()),
                 "alloc/mi_estimate": -float(mi_loss.detach()),
                 "alloc/mi_pos": float(e_pos / max(n_active, 1))}
        return mi_loss, stats

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the statistics network's gradients."""
        self.optimiser.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """Clip and take one Adam step on the statistics network."""
        nn.utils.clip_grad_norm_(list(self.mine.parameters()), self.grad_norm_clip)
        self.optimiser.step()
