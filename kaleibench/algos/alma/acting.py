"""ALMA's allocation at a decision point: propose, score, pick, explore.

The policy samples ``n_proposals`` allocations; the critic scores each *distinct* one once (on
spread about 14 of 32 are distinct in a learner update) and the argmax is executed. While
training, with probability ``prop_eps`` the first raw sample is executed instead, then each agent
independently switches to a uniformly random active subtask with probability ``alloc_eps``.
"""

from __future__ import annotations

import torch

from kaleibench.algos.alma.batch import random_allocs
from kaleibench.nn.allocation import AllocCritic, AllocOutput, AllocPolicy

__all__ = ["explore", "propose_and_pick", "score_proposals"]


def score_proposals(critic: AllocCritic, entities: torch.Tensor, entity_mask: torch.Tensor,
                    entity2task: torch.Tensor, out: AllocOutput, gen: torch.Generator
                    ) -> torch.Tensor:
    """Critic values (B, P) of every proposal, computed once per distinct allocation."""
    leaf_q = critic.score(entities, entity_mask, entity2task, out.leaf_allocs, out.leaf_row, gen)
    return leaf_q[out.proposal_leaf].reshape(out.log_pi.shape)


def propose_and_pick(policy: AllocPolicy, critic: AllocCritic, ent: dict[str, torch.Tensor],
                     last_alloc: torch.Tensor, n_proposals: int, gen: torch.Generator
                     ) -> tuple[torch.Tensor, AllocOutput]:
    """The critic's best of ``n_proposals`` policy samples, (B, N, K), and the policy pass."""
    out = policy(ent["entities"], ent["entity_mask"], ent["entity2task"], ent["task_mask"],
                 last_alloc, n_proposals, gen)
    q = score_proposals(critic, ent["entities"], ent["entity_mask"], ent["entity2task"], out, gen)
    return out.allocs[torch.arange(q.shape[0]), q.argmax(1)], out


def explore(alloc: torch.Tensor, out: AllocOutput, task_mask: torch.Tensor, prop_eps: float,
            alloc_eps: float, gen: torch.Generator) -> torch.Tensor:
    """Exploration of a training decision (B, N, K): raw sample w.p. prop_eps, then per-agent
    uniformly random subtask w.p. alloc_eps."""
    b, n = alloc.shape[:2]
    raw = torch.rand(b, generator=gen) < prop_eps  # (B,)
    alloc = torch.where(raw[:, None, None], out.allocs[:, 0], alloc)
    rand = random_allocs(task_mask, n, gen)  # (B, N, K)
    swap = torch.rand((b, n), generator=gen) < alloc_eps
    return torch.where(swap[..., None], rand, alloc)
