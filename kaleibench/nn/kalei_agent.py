"""The "1R3" recurrent agent of Kaleidoscope (arXiv 2410.08540), masked or unmasked.

Network (Kaleidoscope's 1R3 agent for MPE), shared by all N agents::

    x = relu(fc1(o))            # (B, N, H)
    h = GRUCell(x, h)           # (B, N, H), shared and never masked
    q = relu(fc2(h))            # (B, N, H)
    q = relu(fc3(q))            # (B, N, H)
    q = fc4(q)                  # (B, N, A)

With ``masked=True`` fc1-fc4 are :class:`~kaleibench.nn.kalei_linear.KaleiLinear` layers with one
mask per agent (agent ``i`` always uses mask ``i``: the position along axis N); this is
``kalei-qmix``. With ``masked=False`` they are plain ``nn.Linear`` layers: the matched baseline
``qmix-1r3``. The input already carries the agent-id one-hot (built by the caller).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from kaleibench.nn.kalei_linear import KaleiLinear, default_generator, make_linear, uniform
from kaleibench.nn.rnn_agent import gru_sequence, gru_step


def make_gru_cell(input_size: int, hidden_size: int, generator: torch.Generator) -> nn.GRU:
    """One-layer ``nn.GRU`` (same parameters and math as a GRUCell, plus a fused sequence
    kernel) with PyTorch's default init ``U(−1/√H, 1/√H)``, drawn from ``generator``."""
    # built on the meta device and materialised empty: no draw from the global RNG
    cell = nn.GRU(input_size, hidden_size, batch_first=True, device="meta").to_empty(device="cpu")
    bound = 1.0 / math.sqrt(hidden_size)
    with torch.no_grad():
        for param in cell.parameters():
            param.copy_(uniform(tuple(param.shape), -bound, bound, generator))
    return cell


class Rnn1R3Agent(nn.Module):
    """Shared-parameter 1R3 agent: fc1 → GRU → fc2 → fc3 → fc4, optionally Kaleidoscope-masked.

    Same constructor order and ``forward`` / ``init_hidden`` interface as
    :class:`kaleibench.nn.rnn_agent.GruAgent`.

    Args:
        input_dim: Per-agent input size (padded observation + agent-id one-hot).
        hidden_dim: Hidden size H of fc1-fc3 and of the GRU (64 on MPE).
        n_actions: Number of actions A.
        n_agents: Number of agents N (= number of masks when ``masked``).
        masked: ``True`` for Kalei (KaleiLinear fc1-fc4), ``False`` for plain ``nn.Linear``.
        threshold_init_scale: Threshold init scale of the masked layers.
        threshold_init_bias: Threshold init bias of the masked layers.
        generator: Source of every initial weight (``None``: a generator seeded with 0).
    """

    MASK_LAYER_NAMES: tuple[str, ...] = ("fc1", "fc2", "fc3", "fc4")
    RESET_LAYER_NAMES: tuple[str, ...] = ("fc2", "fc3", "fc4")

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        n_actions: int,
        n_agents: int,
        *,
        masked: bool = True,
        threshold_init_scale: float = 5.0,
        threshold_init_bias: float = 5.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        gen = default_generator(generator)
        self.input_dim = input_dim
        self.n_actions = n_actions
        self.n_agents = n_agents
        self.hidden_dim = hidden_dim
        self.masked = masked

        def layer(in_features: int, out_features: int) -> nn.Module:
            if not masked:
                return make_linear(in_features, out_features, gen)
            return KaleiLinear(
                in_features,
                out_features,
                n_agents,
                threshold_init_scale,
                threshold_init_bias,
                gen,
            )

        self.fc1 = layer(input_dim, hidden_dim)
        self.rnn = make_gru_cell(hidden_dim, hidden_dim, gen)
        self.fc2 = layer(hidden_dim, hidden_dim)
        self.fc3 = layer(hidden_dim, hidden_dim)
        self.fc4 = layer(hidden_dim, n_actions)

    def init_hidden(self, batch_size: int) -> Tensor:
        """Zero hidden state of shape ``(B, N, H)`` on the parameters' device."""
        return next(self.parameters()).new_zeros(batch_size, self.n_agents, self.hidden_dim)

    def forward(self, inputs: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """One recurrent step for all agents.

        Args:
            inputs: Agent inputs ``(B, N, input_dim)``; row ``i`` of axis N is agent ``i``.
            hidden: GRU state ``(B, N, H)``.

        Returns:
            ``(q, hidden)`` with ``q`` of shape ``(B, N, A)`` and the new state ``(B, N, H)``.
        """
        batch, n_agents, _ = inputs.shape
        if n_agents != self.n_agents or hidden.shape != (batch, n_agents, self.hidden_dim):
            raise ValueError(
                f"expected inputs (B, {self.n_agents}, {self.input_dim}) and hidden "
                f"(B, {self.n_agents}, {self.hidden_dim}); got {tuple(inputs.shape)} and "
                f"{tuple(hidden.shape)}"
            )
        x = torch.relu(self.fc1(inputs))  # (B, N, H)
        h_flat = gru_step(self.rnn, x.reshape(-1, self.hidden_dim),
                          hidden.reshape(-1, self.hidden_dim))
        h = h_flat.view(batch, n_agents, self.hidden_dim)  # (B, N, H)
        return self._head(h), h

    def _head(self, h: Tensor) -> Tensor:
        """fc2 → fc3 → fc4 on hidden states (..., N, H) -> (..., N, A)."""
        q = torch.relu(self.fc2(h))  # (..., N, H)
        q = torch.relu(self.fc3(q))  # (..., N, H)
        return self.fc4(q)  # (..., N, A)

    def unroll(self, inputs: Tensor) -> Tensor:
        """Whole episodes from a zero state: inputs (B, T, N, I) -> q (B, T, N, A).

        Computed time-major (see :func:`~kaleibench.nn.rnn_agent.gru_sequence`); the result is
        a (B, T, N, A) view.
        """
        x = torch.relu(self.fc1(inputs.transpose(0, 1)))  # (T, B, N, H)
        return self._head(gru_sequence(self.rnn, x)).transpose(0, 1)

    @property
    def mask_layers(self) -> tuple[KaleiLinear, ...]:
        """The masked layers fc1-fc4 (empty when ``masked=False``)."""
        return self._kalei_layers(self.MASK_LAYER_NAMES)

    @property
    def reset_layers(self) -> tuple[KaleiLinear, ...]:
        """The layers whose dead connections are recycled, fc2-fc4 (fc1 never is)."""
        return self._kalei_layers(self.RESET_LAYER_NAMES)

    def named_mask_layers(self) -> dict[str, KaleiLinear]:
        """``{"fc1": layer, ..., "fc4": layer}`` (empty when ``masked=False``)."""
        return dict(zip(self.MASK_LAYER_NAMES, self.mask_layers, strict=False))

    def threshold_parameters(self) -> list[nn.Parameter]:
        """The threshold logits ``s`` of fc1-fc4, each ``(N, O, I)`` (empty when unmasked)."""
        return [layer.sparse_thresholds for layer in self.mask_layers]

    def _kalei_layers(self, names: tuple[str, ...]) -> tuple[KaleiLinear, ...]:
        layers = tuple(getattr(self, name) for name in names)
        return tuple(layer for layer in layers if isinstance(layer, KaleiLinear))


def sparsity_stats(agent: Rnn1R3Agent) -> dict[str, float]:
    """Sparsity of the masked weights and mean pairwise mask distance between agents.

    * ``sparsity/fcL`` = fraction of exactly-zero entries of ``W_k`` (masked weights), averaged
      over agents ``k`` (all masks have the same size, so this is the zero fraction of the
      ``(N, O, I)`` tensor).
    * ``sparsity/masked_layers`` = zero fraction over all mask-layer weights of all agents.
    * ``sparsity/all_params`` = the same zero count divided by all of the agents' effective
      non-threshold parameters (each agent's masked fc1-fc4 plus the shared GRU and biases):
      the definition of the Kaleidoscope paper's sparsity, ~3.5× smaller on spread.
    * ``mask_distance`` = mean over ordered pairs ``i ≠ j`` of the normalised Hamming distance
      ``(1/P) Σ_p |M_i[p] − M_j[p]|`` between binary masks concatenated over fc1-fc4
      (P = number of weights of one mask).

    Raises:
        ValueError: If the agent is unmasked.
    """
    layers = agent.named_mask_layers()
    if not layers:
        raise ValueError("sparsity_stats needs a masked agent (Rnn1R3Agent(masked=True))")
    stats: dict[str, float] = {}
    n_zero, n_total = 0, 0
    masks = []
    with torch.no_grad():
        for name, layer in layers.items():
            zero = layer.masked_weights() == 0  # (N, O, I)
            stats[f"sparsity/{name}"] = zero.float().mean().item()
            n_zero += int(zero.sum().item())
            n_total += zero.numel()
            margin = layer.weight.abs() - torch.sigmoid(layer.sparse_thresholds)  # (N, O, I)
            masks.append((margin > 0).flatten(1).float())  # (N, O·I)
        stats["sparsity/masked_layers"] = n_zero / n_total
        n_agents = next(iter(layers.values())).sparse_thresholds.shape[0]
        n_params = n_agents * sum(p.numel() for name, p in agent.named_parameters()
                                  if "sparse_thresholds" not in name)
        stats["sparsity/all_params"] = n_zero / n_params
        binary = torch.cat(masks, dim=1)  # (N, P)
        n = binary.shape[0]
        hamming = torch.cdist(binary, binary, p=1) / binary.shape[1]  # (N, N)
        stats["mask_distance"] = hamming.sum().item() / (n * (n - 1)) if n > 1 else 0.0
    return stats
