"""ALMA's high level: autoregressive pointer-network allocation policy and allocation critic.

ALMA: Iqbal, Costales, Sha, NeurIPS 2022, arXiv 2206.07505. Written from the paper's
description, not from the reference code. Task identities enter only through a task one-hot
whose columns are randomly permuted at every forward pass (one permutation per call, drawn
from the run's own ``torch.Generator``), so the networks learn "same subtask as" relations,
not fixed subtask ids.

Shapes: B rows (decision points), P proposals, E entities (agents first), N agents, K subtasks,
F features, D = embed width. Masks are positive (True = present / active / member).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kaleibench.nn.attention import EntityAttention, same_task

COUNT_NORM = 0.2
"""Scale of agent / entity counts fed to the count embeddings (ALMA's COUNT_NORM_FACTOR)."""


def permuted_tasks(entity2task: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``entity2task`` with its K task columns in a fresh random order, (..., E, K) float."""
    perm = torch.randperm(entity2task.shape[-1], generator=gen)  # (K,)
    return entity2task.float()[..., perm]


@dataclass
class AllocOutput:
    """What one pass of the allocation policy returns.

    Proposals that share a prefix of choices share the computation of that prefix: the pass
    walks a trie of the distinct partial allocations of each row. ``leaf_*`` describe the
    distinct complete allocations (what a critic needs to score).
    """

    allocs: torch.Tensor  # (B, P, N, K) one-hot allocations
    log_pi: torch.Tensor  # (B, P) Σ_i log π(k_i | s, k_<i)
    entropy: torch.Tensor  # (B, P) Σ_i H(π(· | s, k_<i))
    max_prob: torch.Tensor  # (B, P) mean over active agents of max_k π(k | s, k_<i)
    agent_embeds: torch.Tensor  # (B, N, D) agents' embeddings (before proposal repeat)
    task_embeds: torch.Tensor  # (B, K, D) task embeddings (sum over each task's entities)
    proposal_leaf: torch.Tensor  # (B·P,) long, distinct allocation of each proposal
    leaf_row: torch.Tensor  # (U,) long, row (decision point) of each distinct allocation
    leaf_allocs: torch.Tensor  # (U, N, K) the distinct allocations


class AllocPolicy(nn.Module):
    """Autoregressive pointer-network proposal policy π(k_1..k_N | s).

    ``logit_{i,k} = ⟨a_i, t_k + c(n_k^ent, n_k^ag)⟩ / √D``, agents sample in index order; the
    chosen task's embedding is updated with the agent's embedding before the next agent.
    """

    def __init__(self, n_features: int, n_tasks: int, dim: int = 128, n_heads: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.fc1 = nn.Linear(n_features, dim)
        self.task_embed = nn.Linear(n_tasks, dim, bias=False)
        self.attn = EntityAttention(dim, n_heads)
        self.count_embed = nn.Linear(2, dim)
        self.embed_update = nn.Linear(2 * dim, dim)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the shared encoder: agent and task embeddings depend only on these."""
        return [*self.fc1.parameters(), *self.task_embed.parameters(), *self.attn.parameters()]

    def encode(self, entities: torch.Tensor, entity_mask: torch.Tensor, entity2task: torch.Tensor,
               last_alloc: torch.Tensor, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Agent embeddings (B, N, D), task embeddings (B, K, D), entity counts per task (B, K)."""
        n = last_alloc.shape[1]
        e2t = entity2task.float().clone()  # (B, E, K)
        e2t[:, :n] = last_alloc
        x1 = self.fc1(entities) + self.task_embed(permuted_tasks(e2t, gen))  # (B, E, D)
        na_member = e2t[:, n:] * entity_mask[:, n:, None]  # (B, E-N, K)
        allowed = same_task(na_member) & entity_mask[:, None, n:]  # (B, E-N, E-N)
        x2 = self.attn(torch.relu(x1[:, n:]), allowed, x1.shape[1] - n)  # (B, E-N, D)
        task_x2 = na_member.transpose(1, 2) @ x2  # (B, K, D)
        return x1[:, :n], task_x2, na_member.sum(1) * COUNT_NORM

    def forward(self, entities: torch.Tensor, entity_mask: torch.Tensor,
                entity2task: torch.Tensor, task_mask: torch.Tensor, last_alloc: torch.Tensor,
                n_proposals: int, gen: torch.Generator, given: torch.Tensor | None = None
                ) -> AllocOutput:
        """Sample ``n_proposals`` allocations (or score ``given`` ones) in one pass.

        Every proposal row draws its own Gumbel noise (one (B·P, K) draw per agent, the same
        stream as a row-by-row pass), but the network runs once per *distinct* prefix: at agent
        i the rows are grouped by their choices for agents < i (a trie node), logits and the
        task-embedding update are computed per node and gathered back to the rows.

        Args:
            entities: (B, E, F); entity_mask: (B, E); entity2task: (B, E, K) static membership;
            task_mask: (B, K) active subtasks; last_alloc: (B, N, K) allocation in force;
            n_proposals: P; gen: generator for the task permutation and the samples;
            given: optional (B, P, N, K) allocations to evaluate instead of sampling.
        """
        agent_x, task_x, nonag_cnt = self.encode(entities, entity_mask, entity2task,
                                                 last_alloc, gen)
        b, n, d = agent_x.shape
        k = task_x.shape[1]
        bp = b * n_proposals
        active_agent = entity_mask[:, :n].to(agent_x.dtype)  # (B, N)
        # ⟨a_i, t_k + C(c_k)⟩ without a (nodes, K, D) tensor: C is affine, so ⟨a_i, C(c)⟩ =
        # c · W_Cᵀ a_i + ⟨a_i, b_C⟩, and t_k is the encoded t_k⁰ plus the updates of the earlier
        # agents that chose k, so ⟨a_i, t_k⟩ = ⟨a_i, t_k⁰⟩ + Σ_{j<i, j chose k} ⟨a_i, upd_j⟩.
        cnt_w = agent_x @ self.count_embed.weight  # (B, N, 2)
        fixed = (agent_x @ task_x.transpose(1, 2) + nonag_cnt[:, None] * cnt_w[..., :1]
                 + (agent_x @ self.count_embed.bias)[..., None])  # (B, N, K)
        node_row = torch.arange(b)  # (U,) row of each trie node
        node_cnt = torch.zeros_like(nonag_cnt)  # (U, K) agents on each subtask so far
        row_node = torch.arange(b).repeat_interleave(n_proposals)  # (BP,) node of each proposal
        prop_row = row_node.clone()  # (BP,) decision point of each proposal
        # per node: Σ log π, Σ H, Σ max π and the choices along its path
        node_logp, node_h, node_maxp = (agent_x.new_zeros(b) for _ in range(3))
        node_alloc = agent_x.new_zeros(b, 0, k)  # (U, i, K)
        earlier: list[tuple[torch.Tensor, torch.Tensor]] = []  # (U, K) choice, (U, D) update
        flat_given = None if given is None else given.reshape(bp, n, k)
        for i in range(n):
            a_i = agent_x[node_row, i]  # (U, D)
            logits = fixed[node_row, i] + node_cnt * cnt_w[node_row, i, 1:]  # (U, K)
            for hard_j, upd_j in earlier:
                logits = logits + hard_j * (upd_j * a_i).sum(-1, keepdim=True)
            logits = logits / d**0.5
            open_k = task_mask[node_row]  # (U, K)
            logits = logits.masked_fill(~open_k, torch.finfo(logits.dtype).min)
            logp = torch.log_softmax(logits, -1)  # (U, K)
            act_i = active_agent[node_row, i]  # (U,)
            # masked subtasks contribute exactly 0 (a node shared by many proposals gets a
            # gradient > 1, and |logp| ~ 3e38 there would overflow to inf · 0)
            h_i = -(logp.exp() * logp).masked_fill(~open_k, 0.0).sum(-1) * act_i  # (U,)
            maxp_i = logp.detach().max(-1).values.exp() * act_i  # (U,)
            if flat_given is None:
                u = torch.rand((bp, k), generator=gen).clamp(1e-10, 1 - 1e-7)
                choice = (logits.detach()[row_node] - torch.log(-torch.log(u))).argmax(-1)
            else:
                choice = flat_given[:, i].argmax(-1)  # (BP,)
            # children: the distinct (node, choice) pairs (an absent agent's choice is void);
            # they become the next trie level
            key = row_node * k + choice * act_i[row_node].long()
            child, row_node = torch.unique(key, return_inverse=True)
            parent, pick = child // k, child % k
            node_row = node_row[parent]
            act_c = act_i[parent]  # (U',)
            hard = nn.functional.one_hot(pick, k).to(agent_x.dtype) * act_c[:, None]  # (U', K)
            node_logp = node_logp[parent] + logp[parent, pick] * act_c
            node_h = node_h[parent] + h_i[parent]
            node_maxp = node_maxp[parent] + maxp_i[parent]
            node_alloc = torch.cat([node_alloc[parent], hard[:, None]], 1)
            if i == n - 1:
                break  # the last agent's choice changes nothing the policy still needs
            node_cnt = node_cnt[parent] + hard * COUNT_NORM
            earlier = [(hard_j[parent], upd_j[parent]) for hard_j, upd_j in earlier]
            # the chosen subtask's embedding after the earlier updates (an absent agent's update
            # is never applied: its row of ``hard`` is 0)
            chosen = task_x[node_row, pick]  # (U', D)
            for hard_j, upd_j in earlier:
                chosen = chosen + hard_j.gather(1, pick[:, None]) * upd_j
            upd = self.embed_update(torch.relu(torch.cat([chosen, a_i[parent]], -1)))  # (U', D)
            earlier.append((hard, upd))
        max_prob = node_maxp[row_node] / active_agent[prop_row].sum(1).clamp_min(1.0)
        return AllocOutput(node_alloc[row_node].reshape(b, n_proposals, n, k),
                           node_logp[row_node].reshape(b, n_proposals),
                           node_h[row_node].reshape(b, n_proposals),
                           max_prob.reshape(b, n_proposals), agent_x, task_x, row_node,
                           node_row, node_alloc)


class AllocCritic(nn.Module):
    """Allocation critic Q(s, k_1..k_N): entity attention, mean over agent rows.

    ``x1 = relu(fc(e) + T(task one-hot) + C(#agents, #entities of e's tasks))``,
    ``Q = out(mean_i relu(attn(x1))_i)``.
    """

    def __init__(self, n_features: int, n_tasks: int, dim: int = 128, n_heads: int = 4) -> None:
        super().__init__()
        self.in_fc = nn.Linear(n_features, dim)
        self.task_embed = nn.Linear(n_tasks, dim, bias=False)
        self.count_embed = nn.Linear(2, dim)
        self.attn = EntityAttention(dim, n_heads)
        self.out_fc = nn.Linear(dim, 1)

    def forward(self, entities: torch.Tensor, entity_mask: torch.Tensor,
                entity2task: torch.Tensor, allocs: torch.Tensor, gen: torch.Generator
                ) -> torch.Tensor:
        """Values of P allocations per row.

        Args:
            entities: (B, E, F); entity_mask: (B, E) bool; entity2task: (B, E, K) static;
            allocs: (B, P, N, K) allocations to score; gen: task-permutation generator.

        Returns:
            (B, P).
        """
        b, p, n, k = allocs.shape
        rows = torch.arange(b).repeat_interleave(p)  # (BP,)
        return self.score(entities, entity_mask, entity2task, allocs.reshape(b * p, n, k), rows,
                          gen).reshape(b, p)

    def score(self, entities: torch.Tensor, entity_mask: torch.Tensor, entity2task: torch.Tensor,
              allocs: torch.Tensor, rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Values of R allocations, each of the decision point ``rows[r]`` (one permutation).

        Args:
            entities: (B, E, F); entity_mask: (B, E) bool; entity2task: (B, E, K) static;
            allocs: (R, N, K); rows: (R,) long indices into B; gen: task-permutation generator.

        Returns:
            (R,).
        """
        n, k = allocs.shape[1:]
        e = entities.shape[1]
        present = entity_mask[rows]  # (R, E)
        e2t = entity2task.float()[rows]  # (R, E, K)
        e2t[:, :n] = allocs
        e2t = e2t * present[..., None]
        counts = torch.stack([e2t[:, :n].sum(1), e2t[:, n:].sum(1)], -1) * COUNT_NORM  # (R, K, 2)
        # An entity row's first-layer input depends only on (decision point, entity, its
        # subtasks, their agent counts): the entity counts per subtask are fixed by the decision
        # point. Most of the R·E rows repeat across the proposals of a decision point, so the
        # first layer and the key/value projections run once per distinct row.
        idx = self._distinct_rows(rows, e2t, n)  # (R, E) index into U distinct rows, or None
        if idx is None:
            inv = torch.arange(len(rows) * e).reshape(len(rows), e)
            rep_r, rep_e = torch.arange(len(rows)).repeat_interleave(e), torch.arange(e).repeat(
                len(rows))
        else:
            inv, rep_r, rep_e = idx
        u_e2t = e2t[rep_r, rep_e]  # (U, K)
        # The count term Σ_k g_k C(c_k) = W_C (Σ_k g_k c_k) + b_C Σ_k g_k (C is affine), so the
        # whole first layer is one matrix product of [features, permuted g, Σ g c, Σ g].
        feats = torch.cat([entities[rows[rep_r], rep_e], permuted_tasks(u_e2t, gen),
                           (u_e2t[..., None] * counts[rep_r]).sum(1), u_e2t.sum(1, keepdim=True)],
                          -1)  # (U, F + K + 3)
        weight = torch.cat([self.in_fc.weight, self.task_embed.weight, self.count_embed.weight,
                            self.count_embed.bias[:, None]], 1)  # (D, F + K + 3)
        x1 = torch.relu(torch.addmm(self.in_fc.bias, feats, weight.t()))  # (U, D)
        allowed = present[:, None, :] & present[:, :n, None]  # (R, N, E)
        x2 = torch.relu(self.attn.forward_distinct(x1, inv, allowed, n))  # (R, N, D)
        w = present[:, :n, None].float()  # (R, N, 1)
        pooled = (x2 * w).sum(1) / w.sum(1).clamp_min(1.0)  # (R, D)
        return self.out_fc(pooled).squeeze(-1)

    @staticmethod
    def _distinct_rows(rows: torch.Tensor, e2t: torch.Tensor, n: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Distinct (decision point, entity, subtasks, agent counts) rows of a scoring batch.

        Returns (inverse (R, E), representative row (U,), representative entity (U,)), or None
        when the integer key would overflow.
        """
        r, e, k = e2t.shape
        radix = n + 2  # per subtask: 0 = not a member, 1 + #agents otherwise
        if (int(rows.max()) + 1) * e * float(radix) ** k >= 2**62:
            return None
        member = (e2t > 0).long()  # (R, E, K)
        n_ag = e2t[:, :n].sum(1).round().long()  # (R, K)
        key = rows[:, None] * e + torch.arange(e)  # (R, E)
        for j in range(k):
            key = key * radix + member[..., j] * (1 + n_ag[:, None, j])
        _, inv = torch.unique(key.flatten(), return_inverse=True)  # (R·E,)
        first = torch.full((int(inv.max()) + 1,), r * e, dtype=torch.long).scatter_reduce(
            0, inv, torch.arange(r * e), "amin")  # (U,)
        return inv.reshape(r, e), first // e, first % e
