"""MINE statistics network and the ALMA+MINE allocation regulariser (SPEC §4.3).

MINE: Belghazi et al., ICML 2018, arXiv 1801.04062 (JSD Fenchel-dual form as in RACE, SPEC §4.1).
ALMA: Iqbal, Costales, Sha, NeurIPS 2022, arXiv 2206.07505.

The MI is estimated between each active agent's allocation embedding and the masked mean of the
*active* task embeddings, from the same policy pass that the amortisation loss uses (no second
pass), and returned as a tensor so that its gradient reaches the policy (none of the seed bugs
of SPEC §4.4). Shapes: M decision points, N agents, K subtasks, D width.
"""

from __future__ import annotations

import torch
from torch import nn

from kaleibench.losses_alma import fenchel_dual_loss
from kaleibench.nn.allocation import AllocOutput


class Mine(nn.Module):
    """``T(x, y)`` as ⟨e_x(x), e_y(y)⟩ with two-layer e_x and one-layer e_y (leaky ReLU)."""

    def __init__(self, x_dim: int, y_dim: int, embed_dim: int = 128) -> None:
        super().__init__()
        self.l1 = nn.Linear(x_dim, embed_dim)
        self.l2 = nn.Linear(embed_dim, embed_dim)
        self.l3 = nn.Linear(y_dim, embed_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """JSD loss (M,) and MI estimate (M,) of M paired samples x (M, X), y (M, Y)."""
        act = nn.functional.leaky_relu
        e_x = act(self.l2(act(self.l1(x))))  # (M, H)
        e_y = act(self.l3(y))  # (M, H)
        return fenchel_dual_loss(e_x, e_y)


def active_task_mean(task_embeds: torch.Tensor, task_mask: torch.Tensor) -> torch.Tensor:
    """``g = Σ_k m_k t_k / Σ_k m_k``: mean over active subtasks only, (M, K, D) -> (M, D)."""
    m = task_mask.float()[..., None]  # (M, K, 1)
    return (task_embeds * m).sum(1) / m.sum(1).clamp_min(1.0)


class MineRegulariser(nn.Module):
    """``L_MI = (1/|A|) Σ_{i∈A} Σ_m w_m L_JSD(a_{m,i}, g_m) / Σ_m w_m``, weighted by ``mi_weight``.

    Its parameters are optimised with the allocation policy's optimiser.
    """

    def __init__(self, dim: int, embed_dim: int = 128, mi_weight: float = 1e-3,
                 detach_global: bool = False) -> None:
        super().__init__()
        self.mine = Mine(dim, dim, embed_dim)
        self.mi_weight, self.detach_global = mi_weight, detach_global

    def alloc_loss(self, out: AllocOutput, task_mask: torch.Tensor, agent_mask: torch.Tensor,
                   dp_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted MI loss tensor and its metrics.

        Args:
            out: the policy pass (agent_embeds (M, N, D), task_embeds (M, K, D));
            task_mask: (M, K) active subtasks; agent_mask: (M, N) active agents;
            dp_mask: (M,) decision points used.
        """
        g = active_task_mean(out.task_embeds, task_mask)  # (M, D)
        if self.detach_global:
            g = g.detach()
        mi_loss = out.agent_embeds.new_zeros(())
        mi_est = out.agent_embeds.new_zeros(())
        n_active = 0
        for i in range(out.agent_embeds.shape[1]):  # per agent: no same-sample false negatives
            w = dp_mask * agent_mask[:, i].float()  # (M,)
            if w.sum() <= 0:
                continue
            loss_i, mi_i = self.mine(out.agent_embeds[:, i], g)  # (M,), (M,)
            mi_loss = mi_loss + (loss_i * w).sum() / w.sum()
            mi_est = mi_est + (mi_i.detach() * w).sum() / w.sum()
            n_active += 1
        mi_loss = mi_loss / max(n_active, 1)
        stats = {"alloc_mi_loss": float(mi_loss.detach()),
                 "mi_estimate": float(mi_est / max(n_active, 1))}
        return self.mi_weight * mi_loss, stats
