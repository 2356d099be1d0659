"""The shared-parameter GRU agent of EPyMARL's QMIX (``hidden_dim`` 64)."""

from __future__ import annotations

import torch
from torch import nn


class GruAgent(nn.Module):
    """q_i = fc2(GRU(relu(fc1(x_i)), h_i)); one network shared by all agents.

    Agent identity enters through the input (one-hot id appended by the learner).
    """

    def __init__(self, input_dim: int, hidden_dim: int, n_actions: int, n_agents: int) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.hidden_dim = hidden_dim
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.rnn = nn.GRUCell(hidden_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, n_actions)

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        """Zero recurrent state (B, N, H) at the start of every episode."""
        return self.fc1.weight.new_zeros(batch_size, self.n_agents, self.hidden_dim)

    def forward(
        self, inputs: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: inputs (B, N, I), hidden (B, N, H) -> q (B, N, A), hidden (B, N, H)."""
        b, n, _ = inputs.shape
        x = torch.relu(self.fc1(inputs.reshape(b * n, -1)))  # (B·N, H)
        h = self.rnn(x, hidden.reshape(b * n, -1))  # (B·N, H)
        q = self.fc2(h)  # (B·N, A)
        return q.view(b, n, -1), h.view(b, n, -1)
