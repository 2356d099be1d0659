"""Entity attention, subtask masking and the per-subtask mixer of ALMA's low level.

ALMA: Iqbal, Costales, Sha, "ALMA: Hierarchical Learning for Composite Multi-Agent Tasks",
NeurIPS 2022, arXiv 2206.07505. Masks are positive: True = may attend / present.
Shapes: B rows, E entities (agents first), N agents, K subtasks, F entity features, D width.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

NEG_INF = float("-inf")
"""Attention logit of a masked pair."""


def same_task(entity2task: torch.Tensor) -> torch.Tensor:
    """Pairs of entities sharing at least one subtask: ``g gᵀ > 0``.

    Args:
        entity2task: (..., E, K) membership (bool or float).

    Returns:
        (..., E, E) bool.
    """
    g = entity2task.float()
    return (g @ g.transpose(-1, -2)) > 0


class _Softmax(torch.autograd.Function):
    """``softmax(scale · logits)`` over the last dim, 0 on rows whose logits are all −∞.

    Forward as exp / sum (PyTorch's softmax kernel is slow on a last dim of a few entities),
    backward as the softmax vector-Jacobian product ``scale · w ⊙ (g − Σ g ⊙ w)``.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, scale: float) -> torch.Tensor:
        top = logits.amax(-1, keepdim=True).clamp_min(torch.finfo(logits.dtype).min)
        weights = ((logits - top) * scale).exp_()
        # the largest term is exp(0) = 1, so the clamp only acts on fully masked rows (sum 0)
        weights = weights.div_(weights.sum(-1, keepdim=True).clamp_min_(1.0))
        ctx.save_for_backward(weights)
        ctx.scale = scale
        return weights

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (weights,) = ctx.saved_tensors
        return weights * (grad - (grad * weights).sum(-1, keepdim=True)) * ctx.scale, None


def scaled_softmax(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(scale · logits, -1)``; rows with every logit −∞ give 0 (not NaN)."""
    out: torch.Tensor = _Softmax.apply(logits, scale)
    return out


class EntityAttention(nn.Module):
    """Multi-head attention of query entities over all entities, with a pairwise mask.

    ``softmax(Q Kᵀ / √(D/H))`` with masked logits at −∞; fully masked query rows give 0.
    """

    def __init__(self, dim: int, n_heads: int = 4) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} not divisible by n_heads {n_heads}")
        self.dim, self.n_heads = dim, n_heads
        self.in_trans = nn.Linear(dim, 3 * dim, bias=False)
        self.out_trans = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, n_queries: int) -> torch.Tensor:
        """Attend from the first ``n_queries`` entities.

        Args:
            x: (B, E, D) entity embeddings.
            allowed: (B, n_queries, E) bool, True where query i may attend to entity j.
            n_queries: number of query rows (the agents, or all entities).

        Returns:
            (B, n_queries, D); rows with nothing allowed are 0.
        """
        d = x.shape[-1]
        w_q, w_kv = self.in_trans.weight.split([d, 2 * d], dim=0)  # fused in_trans, Q rows only
        q = x[:, :n_queries] @ w_q.t()  # (B, Q, D)
        k, v = (x @ w_kv.t()).chunk(2, dim=-1)  # (B, E, D) each
        return self.attend(q, k, v, allowed)

    def forward_distinct(self, x_u: torch.Tensor, inv: torch.Tensor, allowed: torch.Tensor,
                         n_queries: int) -> torch.Tensor:
        """:meth:`forward` on rows given once: entity j of row r is ``x_u[inv[r, j]]``.

        The projections run once per distinct row; queries, keys and values are gathered
        straight into the per-head layout.

        Args:
            x_u: (U, D) distinct entity embeddings; inv: (B, E) long; allowed: (B, Q, E).

        Returns:
            (B, Q, D), equal to ``forward(x_u[inv], allowed, n_queries)``.
        """
        qkv = x_u @ self.in_trans.weight.t()  # (U, 3D): query | key | value
        return self.attend_heads(*gather_qkv_heads(qkv, inv, self.n_heads, n_queries),
                                 allowed)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor
               ) -> torch.Tensor:
        """Attention of projected queries q (B, Q, D) over keys k and values v (B, E, D).

        ``allowed`` (B, Q, E) bool; returns (B, Q, D), rows with nothing allowed are 0.
        """
        b, h = q.shape[0], self.n_heads
        heads = lambda x: x.reshape(b, x.shape[1], h, -1).transpose(1, 2)  # noqa: E731
        return self.attend_heads(heads(q), heads(k), heads(v), allowed)

    def attend_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     allowed: torch.Tensor) -> torch.Tensor:
        """:meth:`attend` on per-head q (B, H, Q, D/H), k and v (B, H, E, D/H)."""
        b, h, n_queries, dh = q.shape
        logits = q @ k.transpose(-1, -2)  # (B, H, Q, E)
        full = bool(allowed.all())  # nothing to mask (e.g. the critic on a fully observed task)
        if not full:
            logits = logits.masked_fill(~allowed[:, None], NEG_INF)
        weights = scaled_softmax(logits, dh**-0.5)  # (B, H, Q, E)
        out = self.out_trans((weights @ v).transpose(1, 2).reshape(b, n_queries, h * dh))
        return out if full else out * allowed.any(-1, keepdim=True)  # (B, Q, D)


def gather_qkv_heads(qkv: torch.Tensor, inv: torch.Tensor, n_heads: int, n_queries: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head queries, keys and values of entity rows ``inv`` from projections computed once
    per distinct row.

    Args:
        qkv: (U, 3D) projections, each row query | key | value, D split into ``n_heads``;
        inv: (B, E) long row indices; n_queries: query entities (the first ones).

    Returns:
        q (B, H, n_queries, D/H), k and v (B, H, E, D/H).

    One gather for the three parts: its backward then zero-fills and accumulates one gradient
    table instead of three (the fill costs about as much as the gather itself).
    """
    dh = qkv.shape[1] // (3 * n_heads)
    chunks = qkv.reshape(-1, dh)  # chunk (row, part, head) at (row·3 + part)·H + head
    head = torch.arange(n_heads)[:, None]  # (H, 1)
    at = [(head + p * n_heads + rows[:, None, :] * (3 * n_heads)).flatten()
          for p, rows in enumerate((inv[:, :n_queries], inv, inv))]  # (B·H·L,) per part
    parts = chunks.index_select(0, torch.cat(at)).split([len(a) for a in at])
    q, k, v = (part.view(len(inv), n_heads, -1, dh) for part in parts)
    return q, k, v


def static_entity_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct entity rows of a (B, T, E, F) input when entities that never change in an
    episode (e.g. landmarks) are given once per episode.

    Returns:
        (inv (B·T, E) long, rep (U,) long): row (b, t, e) of ``x.reshape(-1, F)`` equals row
        ``rep[inv[b·T + t, e]]``.
    """
    b, t, e, _ = x.shape
    static = (x == x[:, :1]).all(-1).all(1)  # (B, E) the same at every step
    flat = torch.arange(b * t * e).reshape(b, t, e)
    idx = torch.where(static[:, None, :], flat[:, :1].expand(b, t, e), flat)
    rep, inv = torch.unique(idx.flatten(), return_inverse=True)
    return inv.reshape(b * t, e), rep


def subtask_allowed(obs_mask: torch.Tensor, entity_mask: torch.Tensor,
                    entity2task: torch.Tensor) -> torch.Tensor:
    """Who may attend to whom under subtask masking (ALMA ``subtask_cond='mask'``).

    ``allowed[i, j] = obs[i, j] ∧ present[j] ∧ (i, j share a subtask)``; agent rows of
    ``entity2task`` hold the allocation.

    Args:
        obs_mask: (B, E, E) bool visibility; entity_mask: (B, E) bool presence;
        entity2task: (B, E, K) membership with agent rows filled.

    Returns:
        (B, E, E) bool.
    """
    return obs_mask & entity_mask[:, None, :] & same_task(entity2task)


class EntityAgent(nn.Module):
    """Feed-forward entity-attention agent with shared parameters (ALMA §3.3).

    ``q_i = fc_out(relu(fc2(relu(attn(relu(fc1([e ⊕ last_action])))_i))))``; agent i is the query
    of its own entity row, so its identity comes from that row.
    """

    def __init__(self, n_features: int, n_actions: int, embed_dim: int = 128,
                 hidden_dim: int = 64, n_heads: int = 4) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.fc1 = nn.Linear(n_features + n_actions, embed_dim)
        self.attn = EntityAttention(embed_dim, n_heads)
        self.fc2 = nn.Linear(embed_dim, hidden_dim)
        self.fc_out = nn.Linear(hidden_dim, n_actions)

    def forward(self, entities: torch.Tensor, last_onehot: torch.Tensor,
                allowed: torch.Tensor, distinct: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor:
        """Q-values of the N agents.

        Args:
            entities: (B, E, F); last_onehot: (B, N, A) previous actions (zeros at t=0);
            allowed: (B, E, E) bool attention mask (see :func:`subtask_allowed`);
            distinct: optional ``(inv, rep)`` of :func:`static_entity_rows`: repeated entity rows
            then go through the first layer and the key/value projection once (same result).

        Returns:
            (B, N, A).
        """
        b, e, _ = entities.shape
        n = last_onehot.shape[1]
        pad = last_onehot.new_zeros(b, e - n, self.n_actions)  # (B, E-N, A)
        x_in = torch.cat([entities, torch.cat([last_onehot, pad], 1)], -1)  # (B, E, F+A)
        if distinct is None:
            h = torch.relu(self.attn(torch.relu(self.fc1(x_in)), allowed[:, :n], n))  # (B, N, D)
        else:
            inv, rep = distinct
            x_u = torch.relu(self.fc1(x_in.reshape(-1, x_in.shape[-1])[rep]))  # (U, D)
            h = torch.relu(self.attn.forward_distinct(x_u, inv, allowed[:, :n], n))
        return self.fc_out(torch.relu(self.fc2(h)))  # (B, N, A)


class SubtaskMixer(nn.Module):
    """One monotone Q_tot per subtask from the agents allocated to it.

    ``Q_k = ELU(Σ_{i∈k} q_i |W1(a_i, s_k)| + b1(s_k)) · |Wf(s_k)| + V(s_k)``, where ``a_i`` embeds
    agent i's entity row and ``s_k`` is the mean embedding of subtask k's entities (its agents
    included): non-negative weights, so ∂Q_k/∂q_i ≥ 0; agents outside k get weight 0.
    """

    def __init__(self, n_features: int, embed_dim: int = 32, hypernet_embed: int = 64) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.encode = nn.Sequential(nn.Linear(n_features, hypernet_embed), nn.ReLU())
        self.hyper_w1 = nn.Linear(2 * hypernet_embed, embed_dim)
        self.hyper_b1 = nn.Linear(hypernet_embed, embed_dim)
        self.hyper_wf = nn.Linear(hypernet_embed, embed_dim)
        self.value = nn.Sequential(nn.Linear(hypernet_embed, embed_dim), nn.ReLU(),
                                   nn.Linear(embed_dim, 1))

    def forward(self, q: torch.Tensor, entities: torch.Tensor, entity2task: torch.Tensor,
                entity_mask: torch.Tensor) -> torch.Tensor:
        """Per-subtask Q_tot.

        Args:
            q: (B, N) chosen-action Q-values; entities: (B, E, F);
            entity2task: (B, E, K) membership incl. the agents' allocation; entity_mask: (B, E).

        Returns:
            (B, K).
        """
        n = q.shape[1]
        z = self.encode(entities)  # (B, E, H)
        member = entity2task.to(z.dtype) * entity_mask[..., None].to(z.dtype)  # (B, E, K)
        s_k = member.transpose(1, 2) @ z / member.sum(1)[..., None].clamp_min(1.0)  # (B, K, H)
        # W1(a_i, s_k) = W1_a a_i + W1_s s_k + b: the agent part per agent, the subtask part per
        # subtask, and every linear map of s_k in one product
        w1_a, w1_s = self.hyper_w1.weight.split(z.shape[-1], 1)  # (E', H) each
        v_in = cast(nn.Linear, self.value[0])
        of_s = nn.functional.linear(
            s_k, torch.cat([w1_s, self.hyper_b1.weight, self.hyper_wf.weight, v_in.weight]),
            torch.cat([self.hyper_w1.bias, self.hyper_b1.bias, self.hyper_wf.bias, v_in.bias])
        )  # (B, K, 4E')
        w1_k, b1, wf, v_hidden = of_s.split(self.embed_dim, -1)  # (B, K, E') each
        w1 = ((z[:, :n] @ w1_a.t())[:, :, None] + w1_k[:, None]).abs()  # (B, N, K, E')
        w1 = w1 * member[:, :n, :, None]
        hidden = nn.functional.elu((q[..., None, None] * w1).sum(1) + b1)  # (B, K, E')
        value = self.value[2](torch.relu(v_hidden)).squeeze(-1)  # (B, K)
        return (hidden * wf.abs()).sum(-1) + value  # (B, K)
