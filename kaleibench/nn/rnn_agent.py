"""The shared-parameter GRU agent of EPyMARL's QMIX (``hidden_dim`` 64)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from kaleibench.nn import native_agent, native_gru
from kaleibench.nn.dense import dense
from kaleibench.nn.fused_gru import gru_parameters, gru_sequence_fused


def gru_step(rnn: nn.GRU, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """One GRU step for M sequences: x (M, H_in), hidden (M, H) -> (M, H).

    Without a gradient (acting) and with the C kernels: the C step of the learner's unroll
    (:func:`~kaleibench.nn.native_gru.gru_step_native`): at the acting batch size (24 rows,
    H = 64) about half of ``nn.GRU``'s CPU time per call (24 vs 50 µs); otherwise ``rnn``.
    """
    if not torch.is_grad_enabled() and x.dtype == torch.float32 and native_gru.available():
        return native_gru.gru_step_native(x, hidden, *gru_parameters(rnn))
    _, h = rnn(x.unsqueeze(1), hidden.unsqueeze(0))  # (1, M, H)
    return h.squeeze(0)


def gru_sequence(rnn: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """The GRU over whole episodes from a zero state, in one call, time-major.

    x (T, B, N, H_in) -> hidden states (T, B, N, H): the same function as T calls of
    :func:`gru_step`, computed by :func:`~kaleibench.nn.fused_gru.gru_sequence_fused` (one
    autograd node with a hand-written BPTT). Time-major so that the B·N sequences of a step are
    already adjacent rows: no layout copy on the way in or out.
    """
    t, b, n, _ = x.shape
    out = gru_sequence_fused(rnn, x.reshape(t, b * n, -1))  # (T, B·N, H)
    return out.view(t, b, n, -1)


class GruAgent(nn.Module):
    """q_i = fc2(GRU(relu(fc1(x_i)), h_i)); one network shared by all agents.

    Agent identity enters through the input (one-hot id appended by the learner).
    """

    def __init__(self, input_dim: int, hidden_dim: int, n_actions: int, n_agents: int) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.hidden_dim = hidden_dim
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.rnn = nn.GRU(hidden_dim, hidden_dim, batch_first=True)
        self.fc2 = nn.Linear(hidden_dim, n_actions)

    def unroll_parameters(self) -> tuple[torch.Tensor, ...]:
        """(W₁, b₁, W_ih, W_hh, b_ih, b_hh, W₂, b₂), the order of :meth:`parameters` and of the
        C unroll's arguments; read from the layers' parameter dicts, without ``nn.Module``'s
        attribute look-up (~0.5 µs a name, two names a parameter: ~8 µs per call)."""
        layers = self._modules
        fc1, rnn, fc2 = layers["fc1"], layers["rnn"], layers["fc2"]
        assert fc1 is not None and rnn is not None and fc2 is not None
        return cast(tuple[torch.Tensor, ...], (
            fc1._parameters["weight"], fc1._parameters["bias"],
            *gru_parameters(cast(nn.GRU, rnn)),
            fc2._parameters["weight"], fc2._parameters["bias"]))

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        """Zero recurrent state (B, N, H) at the start of every episode."""
        return self.fc1.weight.new_zeros(batch_size, self.n_agents, self.hidden_dim)

    def forward(
        self, inputs: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: inputs (B, N, I), hidden (B, N, H) -> q (B, N, A), hidden (B, N, H)."""
        b, n, _ = inputs.shape
        x = torch.relu(self.fc1(inputs.reshape(b * n, -1)))  # (B·N, H)
        h = gru_step(self.rnn, x, hidden.reshape(b * n, -1))  # (B·N, H)
        q = self.fc2(h)  # (B·N, A)
        return q.view(b, n, -1), h.view(b, n, -1)

    def unroll(self, inputs: torch.Tensor) -> torch.Tensor:
        """Whole episodes from a zero state: inputs (B, T, N, I) -> q (B, T, N, A).

        Computed time-major (see :func:`gru_sequence`); the result is a (B, T, N, A) view.
        Where the C kernels run, the whole unroll is one autograd node
        (:mod:`kaleibench.nn.native_agent`); otherwise fc1 and fc2 run as one node each over all
        rows (:func:`~kaleibench.nn.dense.dense`) around the GRU's.
        """
        x = inputs.transpose(0, 1)  # (T, B, N, I)
        if (native_agent.available() and x.dtype == torch.float32 and not x.requires_grad
                and self.fc1.weight.dtype == torch.float32):
            t, b, n, i = x.shape
            w1, b1, w_ih, w_hh, b_ih, b_hh, w2, b2 = self.unroll_parameters()
            q = native_agent.gru_agent_unroll(x.contiguous().view(t * b * n, i), w1, b1,
                                              (w_ih, w_hh, b_ih, b_hh), w2, b2, t)
            return q.view(t, b, n, -1).transpose(0, 1)
        x = dense(self.fc1, x, relu=True)  # (T, B, N, H)
        return dense(self.fc2, gru_sequence(self.rnn, x)).transpose(0, 1)


class MlpAgent(nn.Module):
    """EPyMARL's ``use_rnn: False`` agent: q_i = fc3(relu(fc2(relu(fc1(x_i))))), no memory.

    Same interface as :class:`GruAgent`; the "hidden state" is carried but unused.
    """

    def __init__(self, input_dim: int, hidden_dim: int, n_actions: int, n_agents: int) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.hidden_dim = hidden_dim
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.fc3 = nn.Linear(hidden_dim, n_actions)

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        """Zeros (B, N, H), for interface compatibility."""
        return self.fc1.weight.new_zeros(batch_size, self.n_agents, self.hidden_dim)

    def forward(
        self, inputs: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (B, N, I) -> q (B, N, A); ``hidden`` passes through unchanged."""
        return self.unroll(inputs), hidden

    def unroll(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (..., N, I) -> q (..., N, A), any leading shape."""
        x = torch.relu(self.fc1(inputs))  # (..., N, H)
        return self.fc3(torch.relu(self.fc2(x)))  # (..., N, A)
