"""ALMA's high level: autoregressive pointer-network allocation policy and allocation critic.

ALMA: Iqbal, Costales, Sha, NeurIPS 2022, arXiv 2206.07505 (SPEC §3.4, §3.5). Written from the
specification, not from the reference code. Task identities enter only through a task one-hot
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
    """What one pass of the allocation policy returns."""

    allocs: torch.Tensor  # (B, P, N, K) one-hot allocations
    log_pi: torch.Tensor  # (B, P) Σ_i log π(k_i | s, k_<i)
    entropy: torch.Tensor  # (B, P) Σ_i H(π(· | s, k_<i))
    agent_embeds: torch.Tensor  # (B, N, D) agents' embeddings (before proposal repeat)
    task_embeds: torch.Tensor  # (B, K, D) task embeddings (sum over each task's entities)


class AllocPolicy(nn.Module):
    """Autoregressive pointer-network proposal policy π(k_1..k_N | s) (SPEC §3.4).

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
        rep = lambda x: x.repeat_interleave(n_proposals, 0)  # noqa: E731  (B, ...) -> (BP, ...)
        agents, tasks, cnt = rep(agent_x), rep(task_x), rep(nonag_cnt)  # (BP, N, D) (BP, K, D)
        active_task, active_agent = rep(task_mask), rep(entity_mask[:, :n].float())
        ag_cnt = torch.zeros_like(cnt)  # (BP, K)
        log_pi = agents.new_zeros(b * n_proposals)
        entropy = agents.new_zeros(b * n_proposals)
        picks = []
        for i in range(n):
            c = self.count_embed(torch.stack([cnt, ag_cnt], -1))  # (BP, K, D)
            logits = ((tasks + c) @ agents[:, i, :, None]).squeeze(-1) / d**0.5  # (BP, K)
            logits = logits.masked_fill(~active_task, torch.finfo(logits.dtype).min)
            logp = torch.log_softmax(logits, -1)  # (BP, K)
            if given is None:
                u = torch.rand(logits.shape, generator=gen).clamp(1e-10, 1 - 1e-7)
                choice = (logits.detach() - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max
            else:
                choice = given.reshape(b * n_proposals, n, k)[:, i].argmax(-1)  # (BP,)
            log_pi = log_pi + logp.gather(1, choice[:, None]).squeeze(1) * active_agent[:, i]
            entropy = entropy - (logp.exp() * logp).sum(-1) * active_agent[:, i]
            hard = nn.functional.one_hot(choice, k).float() * active_agent[:, i, None]  # (BP, K)
            ag_cnt = ag_cnt + hard * COUNT_NORM
            # only the chosen task's embedding changes, so update just that row
            chosen = (tasks * hard[..., None]).sum(1)  # (BP, D)
            upd = self.embed_update(torch.relu(torch.cat([chosen, agents[:, i]], -1)))  # (BP, D)
            tasks = tasks + upd[:, None] * hard[..., None]  # (BP, K, D)
            picks.append(hard)
        allocs = torch.stack(picks, 1).reshape(b, n_proposals, n, k)  # (B, P, N, K)
        return AllocOutput(allocs, log_pi.reshape(b, n_proposals),
                           entropy.reshape(b, n_proposals), agent_x, task_x)


class AllocCritic(nn.Module):
    """Allocation critic Q(s, k_1..k_N) (SPEC §3.5): entity attention, mean over agent rows.

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
        rep = lambda x: x.repeat_interleave(p, 0)  # noqa: E731
        base, present = rep(self.in_fc(entities)), rep(entity_mask)  # (BP, E, D), (BP, E)
        e2t = rep(entity2task.float()).clone()  # (BP, E, K)
        e2t[:, :n] = allocs.reshape(b * p, n, k)
        e2t = e2t * present[..., None]
        counts = torch.stack([e2t[:, :n].sum(1), e2t[:, n:].sum(1)], -1) * COUNT_NORM  # (BP,K,2)
        count_x = e2t @ self.count_embed(counts)  # (BP, E, D)
        x1 = torch.relu(base + self.task_embed(permuted_tasks(e2t, gen)) + count_x)
        allowed = present[:, None, :] & present[:, :n, None]  # (BP, N, E)
        x2 = torch.relu(self.attn(x1, allowed, n))  # (BP, N, D)
        w = present[:, :n, None].float()  # (BP, N, 1)
        pooled = (x2 * w).sum(1) / w.sum(1).clamp_min(1.0)  # (BP, D)
        return self.out_fc(pooled).reshape(b, p)
