"""QMIX's monotonic mixing network (Rashid et al. 2018, arXiv 1803.11485)."""

from __future__ import annotations

import torch
from torch import nn


class QMixer(nn.Module):
    """Q_tot = ELU(q·|W1(s)| + b1(s)) · |Wf(s)| + V(s), hypernetworks with 2 layers.

    Non-negative mixing weights (|·|) make ∂Q_tot/∂q_i ≥ 0 (monotonicity).
    """

    def __init__(self, n_agents: int, state_dim: int, embed_dim: int = 32,
                 hypernet_embed: int = 64) -> None:
        super().__init__()
        self.n_agents, self.embed_dim = n_agents, embed_dim
        self.hyper_w1 = nn.Sequential(
            nn.Linear(state_dim, hypernet_embed), nn.ReLU(),
            nn.Linear(hypernet_embed, embed_dim * n_agents),
        )
        self.hyper_wf = nn.Sequential(
            nn.Linear(state_dim, hypernet_embed), nn.ReLU(), nn.Linear(hypernet_embed, embed_dim)
        )
        self.hyper_b1 = nn.Linear(state_dim, embed_dim)
        self.value = nn.Sequential(
            nn.Linear(state_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1)
        )

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """q (..., N), state (..., S) -> Q_tot (...)."""
        lead = q.shape[:-1]
        q = q.reshape(-1, 1, self.n_agents)  # (M, 1, N)
        s = state.reshape(-1, state.shape[-1])  # (M, S)
        w1 = self.hyper_w1(s).abs().view(-1, self.n_agents, self.embed_dim)  # (M, N, E)
        b1 = self.hyper_b1(s).view(-1, 1, self.embed_dim)  # (M, 1, E)
        hidden = nn.functional.elu(torch.bmm(q, w1) + b1)  # (M, 1, E)
        wf = self.hyper_wf(s).abs().view(-1, self.embed_dim, 1)  # (M, E, 1)
        v = self.value(s).view(-1, 1, 1)  # (M, 1, 1)
        return (torch.bmm(hidden, wf) + v).view(*lead)
