"""QMIX's monotonic mixing network (Rashid et al. 2018, arXiv 1803.11485)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from kaleibench.nn import native_mix
from kaleibench.nn.products import linear, linear_stacked


def _layer(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x wᵀ + b; without a gradient, the product of the C path's forward pass (same floats)."""
    return torch.addmm(b, x, w.t()) if torch.is_grad_enabled() else linear(x, w, b)


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
        # the linear layers in the order the products use them (a plain tuple, not registered
        # again; indexing an nn.Sequential at every update cost ~10 µs)
        self._state_layers = cast(tuple[nn.Linear, ...], (
            self.hyper_w1[0], self.hyper_wf[0], self.value[0], self.hyper_b1))
        self._hidden_layers = cast(tuple[nn.Linear, ...], (
            self.hyper_w1[2], self.hyper_wf[2], self.value[2]))

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """q (..., N), state (..., S) -> Q_tot (...).

        With the C kernels (:mod:`kaleibench.nn.native_mix`) and a float32 CPU batch, the
        whole mixer is one autograd node with a hand-written backward pass; otherwise torch's
        operations (:meth:`_weights`, :meth:`_mix`) compute the same function.
        """
        lead = q.shape[:-1]
        s = state.reshape(-1, state.shape[-1])
        if self._native(q, s):
            out: torch.Tensor = native_mix.NativeQMix.apply(
                q.reshape(-1, self.n_agents), s, *self.node_parameters())
            return out.view(*lead)
        w1, b1, wf, v = self._weights(s)
        w1 = w1.view(-1, self.n_agents, self.embed_dim)
        return self._mix(q.reshape(-1, self.n_agents), w1, b1, wf, v).view(*lead)

    def _native(self, *tensors: torch.Tensor) -> bool:
        """Whether the C kernels take these float32 CPU tensors at this mixing width."""
        return (all(a.dtype == torch.float32 and a.device.type == "cpu" for a in tensors)
                and self.hyper_b1.weight.dtype == torch.float32
                and native_mix.available(self.embed_dim))

    def _first_layers(self) -> list[torch.Tensor]:
        """The layers that read the state: W1's, Wf's and V's first layers and b1's layer,
        weights then biases (their outputs side by side: one matrix product). Read from the
        layers' parameter dicts: ``nn.Module``'s attribute look-up cost ~0.5 µs a name."""
        layers = self._state_layers
        return cast(list[torch.Tensor], [layer._parameters["weight"] for layer in layers]
                    + [layer._parameters["bias"] for layer in layers])

    def _second_layers(self) -> list[torch.Tensor]:
        """W1's, Wf's and V's second layers: (weight, bias) pairs."""
        return cast(list[torch.Tensor], [
            t for layer in self._hidden_layers
            for t in (layer._parameters["weight"], layer._parameters["bias"])])

    def node_parameters(self) -> list[torch.Tensor]:
        """The parameters in the order of :class:`~kaleibench.nn.native_mix.NativeQMix`'s
        arguments: the state-reading layers' weights, their biases, then the second layers'
        (weight, bias) pairs."""
        return [*self._first_layers(), *self._second_layers()]

    @property
    def n_weights(self) -> int:
        """Width of :meth:`hyper`'s packed output: |W1| (N·E), b1 (E), |Wf| (E), V (1)."""
        return self.n_agents * self.embed_dim + 2 * self.embed_dim + 1

    def hyper(self, state: torch.Tensor) -> torch.Tensor:
        """state (..., S) -> the mixing weights of each state, packed (..., :attr:`n_weights`).

        They depend on the state and the hypernetworks only, so a target mixer's weights of a
        stored episode can be kept as long as the target network is (see :meth:`mix`).
        """
        lead = state.shape[:-1]
        s = state.reshape(-1, state.shape[-1])
        if torch.is_grad_enabled() or not self._native(s):
            return torch.cat(self._weights(s), dim=1).view(*lead, -1)
        # without a gradient: :meth:`_weights`'s operations in one C call, written into their
        # packed columns
        n_e, e = self.n_agents * self.embed_dim, self.embed_dim
        m = s.shape[0]
        packed = torch.empty(m, self.n_weights)
        pre = torch.empty(m, sum(layer.out_features for layer in self._state_layers))
        native_mix.hypernetworks(s.contiguous(), self.node_parameters(), pre, packed[:, :n_e],
                                 packed[:, n_e + e:n_e + 2 * e], packed[:, n_e + 2 * e:],
                                 b1=packed[:, n_e:n_e + e])
        return packed.view(*lead, -1)

    def mix(self, q: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """q (..., N) and packed weights (..., :attr:`n_weights`) from :meth:`hyper` -> Q_tot
        (...); ``mix(q, hyper(s))`` is ``forward(q, s)``, the same operations."""
        lead = q.shape[:-1]
        n, e = self.n_agents, self.embed_dim
        w1, b1, wf, v = weights.reshape(-1, self.n_weights).split([n * e, e, e, 1], dim=1)
        q = q.reshape(-1, n)
        if not torch.is_grad_enabled() and self._native(q, weights):
            return native_mix.mix(q, w1, b1, wf, v, save=False)[0].view(*lead)
        return self._mix(q, w1.view(-1, n, e), b1, wf, v).view(*lead)

    def _weights(self, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """s (M, S) -> |W1| (M, N·E), b1 (M, E), |Wf| (M, E), V (M, 1).

        The four layers that read ``s`` run as one matrix product (their weights concatenated),
        the same products as the C path's forward pass.
        """
        h_w1, h_wf, h_v, b1 = self._hidden(s)
        w_w1, c_w1, w_wf, c_wf, w_v, c_v = self._second_layers()
        w1 = _layer(h_w1, w_w1, c_w1).abs()  # (M, N·E)
        wf = _layer(h_wf, w_wf, c_wf).abs()  # (M, E)
        v = _layer(h_v, w_v, c_v)  # (M, 1)
        return w1, b1, wf, v

    def _hidden(self, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """s (M, S) -> the hidden layers of W1's, Wf's and V's hypernetworks (after ReLU) and
        b1, from one product of ``s`` with the four first layers' weights side by side."""
        first = self._first_layers()
        widths = [w.shape[0] for w in first[:4]]
        k = sum(widths[:3])
        pre = (_layer(s, torch.cat(first[:4]), torch.cat(first[4:])) if torch.is_grad_enabled()
               else linear_stacked(s, first[:4], first[4:]))  # (M, Σ widths)
        hidden = torch.relu(pre[:, :k]) if torch.is_grad_enabled() else pre[:, :k].clamp_min_(0.0)
        h_w1, h_wf, h_v = hidden.split(widths[:3], dim=1)
        return h_w1, h_wf, h_v, pre[:, k:]

    @staticmethod
    def _mix(q: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, wf: torch.Tensor,
             v: torch.Tensor) -> torch.Tensor:
        """q (M, N) -> Q_tot (M,): the per-row products with the tiny mixing weights as
        broadcast multiply-sums rather than M batched 1×N×E matrix products."""
        hidden = nn.functional.elu((q.unsqueeze(-1) * w1).sum(1) + b1)  # (M, E)
        return ((hidden * wf).sum(1, keepdim=True) + v).view(-1)


class AttentionHyperNet(nn.Module):
    """One vector per agent from masked entity attention: ``fc2(attn(relu(fc1(x))))``.

    The agents are the queries; ``allowed`` says which entities each may attend to (under
    subtask masking: the entities of its own subtask). Absent agents get 0.
    """

    def __init__(self, in_dim: int, hyper_dim: int, out_dim: int, n_heads: int) -> None:
        super().__init__()
        from kaleibench.nn.attention import EntityAttention

        self.fc1 = nn.Linear(in_dim, hyper_dim)
        self.attn = EntityAttention(hyper_dim, n_heads)
        self.fc2 = nn.Linear(hyper_dim, out_dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, agent_mask: torch.Tensor,
                distinct: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, E, F), allowed (B, N, E) bool, agent_mask (B, N) bool -> (B, N, out).

        ``distinct`` (inv, rep): entity row (b, e) equals row ``rep[inv[b, e]]`` of
        ``x.reshape(-1, F)``; repeated rows are then embedded once (same result).
        """
        n = allowed.shape[1]
        if distinct is None:
            h = self.attn(torch.relu(self.fc1(x)), allowed, n)  # (B, N, H)
        else:
            inv, rep = distinct
            x_u = torch.relu(self.fc1(x.reshape(-1, x.shape[-1])[rep]))  # (U, H)
            h = self.attn.forward_distinct(x_u, inv, allowed, n)
        return self.fc2(h) * agent_mask[..., None].float()


class AttentionSubtaskMixer(nn.Module):
    """ALMA's mixer: one monotone Q_tot per subtask from attention hyper-networks over entities.

    Four hyper-networks (:class:`AttentionHyperNet`) read the entities (with the agents' last
    actions) under the subtask attention mask and give one vector per agent. For subtask k the
    vectors of agents outside k are zeroed ("one copy per subtask"):

    ``Q_k = ELU(Σ_{i∈k} q_i W1_i + b1_k) · Wf_k + V_k`` with ``W1_i = softmax(w1_i)`` over the
    mixing width, ``b1_k = |mean_i b_i|``, ``Wf_k = softmax(mean_i f_i)``, ``V_k = |mean_i v_i|``
    (means over all N agent slots, the zeroed ones included). Softmax weights are positive, so
    ∂Q_k/∂q_i ≥ 0 and = 0 for agents outside k.
    """

    def __init__(self, in_dim: int, embed_dim: int = 32, hypernet_embed: int = 128,
                 n_heads: int = 4) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.hyper_w1 = AttentionHyperNet(in_dim, hypernet_embed, embed_dim, n_heads)
        self.hyper_b1 = AttentionHyperNet(in_dim, hypernet_embed, embed_dim, n_heads)
        self.hyper_wf = AttentionHyperNet(in_dim, hypernet_embed, embed_dim, n_heads)
        self.hyper_v = AttentionHyperNet(in_dim, hypernet_embed, 1, n_heads)

    def forward(self, q: torch.Tensor, entities: torch.Tensor, entity2task: torch.Tensor,
                entity_mask: torch.Tensor, distinct: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor:
        """Per-subtask Q_tot.

        Args:
            q: (B, N) chosen-action Q-values; entities: (B, E, F) entity features (the agents'
            last actions included); entity2task: (B, E, K) membership with the agents'
            allocation; entity_mask: (B, E) bool presence; distinct: optional repeated-row
            index (see :class:`AttentionHyperNet`).

        Returns:
            (B, K).
        """
        n = q.shape[1]
        present = entity_mask.bool()
        member = entity2task.float() * present[..., None].float()  # (B, E, K)
        same = (member[:, :n] @ member.transpose(1, 2)) > 0  # (B, N, E) shares a subtask
        allowed = same & present[:, None, :]
        agents = present[:, :n]
        in_task = member[:, :n].transpose(1, 2)  # (B, K, N) agent i in subtask k

        def per_task(x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, K, N, D)
            return x[:, None] * in_task[..., None]

        args = (entities, allowed, agents, distinct)
        w1 = per_task(torch.softmax(self.hyper_w1(*args), -1))  # (B, K, N, M)
        b1 = per_task(self.hyper_b1(*args)).mean(2).abs()  # (B, K, M)
        wf = torch.softmax(per_task(self.hyper_wf(*args)).mean(2), -1)  # (B, K, M)
        v = per_task(self.hyper_v(*args)).mean((2, 3)).abs()  # (B, K)
        hidden = nn.functional.elu((q[:, None, :, None] * w1).sum(2) + b1)  # (B, K, M)
        return (hidden * wf).sum(-1) + v
