"""ALMA's high level: amortized Q-learning of the allocation policy and critic.

One update, on a recency-filtered sample of episodes, flattened to its decision points:

* critic: ``L_Q = Σ w (Q(s_m, a_m) − y_m)² / Σ w`` with ``y_m = R_m + γ (1 − d_m)
  Q⁻(s_{m+1}, best_{m+1})``; ``best`` is the online critic's argmax over the online policy's
  proposals (each distinct proposal scored once), ``w`` = meta-batch mask × recency weight;
* policy (amortisation): ``L_π = Σ mask (−log π(best | s)) / Σ mask − c_H · mean H``, masked
  with the same meta-batch mask as the critic (a decision point whose value is never trained
  directly does not teach the policy either); an optional regulariser adds its own term.

The policy pass walks the trie of distinct partial allocations (see
:class:`~kaleibench.nn.allocation.AllocPolicy`), so its cost follows the number of distinct
prefixes, not ``n_proposals``. Deviation: PopArt is replaced by standardising the team reward
with running moments.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from kaleibench.algos.alma.acting import score_proposals
from kaleibench.algos.alma.batch import gather_decisions, sample_recent, subtask_coverage
from kaleibench.algos.alma.config import AlmaConfig
from kaleibench.algos.base import EnvInfo
from kaleibench.algos.qmix import reinit_
from kaleibench.envs.entities import N_FEATURES
from kaleibench.losses import (
    RunningMeanStd,
    alloc_critic_loss,
    alloc_td_targets,
    amortisation_loss,
    decay_weights,
    make_meta_batch,
)
from kaleibench.nn.allocation import AllocCritic, AllocOutput, AllocPolicy
from kaleibench.train.buffer import EpisodeBatch, ReplayBuffer

__all__ = ["AllocLosses", "AllocRegulariser", "HighLevel"]


class AllocRegulariser(Protocol):
    """An extra term of the allocation-policy objective, computed from the same policy pass.

    Its own parameters are trained by its own optimiser (:meth:`step`), not the policy's.
    """

    grad_ratio_key: str
    """Metric name of ‖∇ term‖ / ‖∇ amortisation‖ on the policy's shared encoder."""

    def alloc_loss(self, out: AllocOutput, task_mask: torch.Tensor, agent_mask: torch.Tensor,
                   dp_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss tensor to back-propagate, and metrics."""
        ...

    def zero_grad(self) -> None:
        """Clear the regulariser's own gradients."""
        ...

    def step(self) -> None:
        """Step the regulariser's own optimiser (after backward)."""
        ...


@dataclass
class AllocLosses:
    """Everything one allocation update computes before stepping."""

    critic_loss: torch.Tensor
    pi_loss: torch.Tensor  # amortisation + entropy (without the regulariser)
    amort: torch.Tensor
    extra: torch.Tensor | None  # the regulariser's term
    stats: dict[str, float]


class HighLevel:
    """Allocation policy, critic, target critic, their RMSprop optimisers and the update."""

    def __init__(self, cfg: AlmaConfig, info: EnvInfo, n_tasks: int, gen: torch.Generator,
                 regulariser: AllocRegulariser | None = None) -> None:
        self.cfg, self.info, self.n_agents = cfg, info, info.n_agents
        self.policy = AllocPolicy(N_FEATURES, n_tasks, cfg.embed_dim, cfg.n_heads)
        self.critic = AllocCritic(N_FEATURES, n_tasks, cfg.embed_dim, cfg.n_heads)
        for module in (self.policy, self.critic):
            reinit_(module, gen)
        self.target_critic = copy.deepcopy(self.critic)
        self.regulariser = regulariser
        rms: dict[str, Any] = dict(lr=cfg.alloc_lr, alpha=0.99, eps=1e-5)
        self.critic_opt = torch.optim.RMSprop(self.critic.parameters(), **rms)
        self.policy_opt = torch.optim.RMSprop(self.policy.parameters(), **rms)
        self.alloc_reward_ms = RunningMeanStd()
        self.n_alloc_updates = 0

    def sample(self, buffer: ReplayBuffer, t_env: int, gen: torch.Generator
               ) -> EpisodeBatch | None:
        """A recency-filtered sample with at most ``max_bs`` decision points."""
        cfg = self.cfg
        per_ep = -(-self.info.episode_limit // cfg.action_length)
        return sample_recent(buffer, max(2, min(cfg.alloc_batch_size, cfg.max_bs // per_ep)),
                             t_env, cfg.decay_old, gen)

    def losses(self, batch: EpisodeBatch, t_env: int, gen: torch.Generator) -> AllocLosses:
        """Critic and policy losses of one update on ``batch`` (no optimiser step)."""
        cfg = self.cfg
        filled = batch["filled"]
        team_r = batch["reward"]
        if cfg.standardise_rewards:
            self.alloc_reward_ms.update(team_r[filled])
            team_r = self.alloc_reward_ms.normalise(team_r)
        meta = make_meta_batch(team_r, batch["terminated"], batch["truncated"], filled,
                               batch["hier_decision"][:, :-1], cfg.action_length,
                               bool(cfg.timeout_is_terminal))
        d = gather_decisions(batch, meta)
        ent, emask, e2t = d["entities"], d["entity_mask"], d["entity2task"]
        q = self.critic(ent, emask, e2t, d["alloc"][:, None], gen)[:, 0]  # (M,)
        out = self.policy(ent, emask, e2t, d["task_mask"], d["last_alloc"], cfg.n_proposals, gen)
        with torch.no_grad():
            scores = score_proposals(self.critic, ent, emask, e2t, out, gen)  # (M, P)
            best = scores.argmax(1)  # (M,)
            best_alloc = out.allocs[torch.arange(len(best)), best]  # (M, N, K)
            q_next = self.target_critic(ent, emask, e2t, best_alloc[:, None], gen)[:, 0]
        y = alloc_td_targets(meta.reward, meta.terminated, q_next, cfg.gamma)  # (M-1,)
        w = meta.mask[:-1] * decay_weights(t_env - d["t_added"], cfg.decay_old)[:-1]
        critic_loss = alloc_critic_loss(q[:-1], y, w)
        log_pi_best = out.log_pi.gather(1, best[:, None]).squeeze(1)  # (M,)
        amort, pi_loss = amortisation_loss(log_pi_best, out.entropy, meta.mask, cfg.entropy_coef)
        stats = self._stats(d, out, log_pi_best, meta.mask)
        extra = None
        if self.regulariser is not None:
            extra, extra_stats = self.regulariser.alloc_loss(out, d["task_mask"],
                                                             emask[:, : self.n_agents], meta.mask)
            stats.update(extra_stats)
        stats.update({"alloc/critic_loss": float(critic_loss.detach()),
                      "alloc/amort_loss": float(amort.detach()),
                      "alloc/pi_loss": float(pi_loss.detach())})
        return AllocLosses(critic_loss, pi_loss, amort, extra, stats)

    def backward(self, losses: AllocLosses) -> dict[str, float]:
        """Gradients of both losses (and the regulariser's split off for its ratio metric)."""
        self.critic_opt.zero_grad(set_to_none=True)
        losses.critic_loss.backward()
        self.policy_opt.zero_grad(set_to_none=True)
        if losses.extra is None or self.regulariser is None:
            losses.pi_loss.backward()
            return {}
        self.regulariser.zero_grad()
        losses.pi_loss.backward(retain_graph=True)
        enc = self.policy.encoder_parameters()
        before = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in enc]
        losses.extra.backward()
        after = [p.grad if p.grad is not None else torch.zeros_like(p) for p in enc]
        g_amort = torch.linalg.vector_norm(torch.cat([g.flatten() for g in before]))
        g_extra = torch.linalg.vector_norm(torch.cat([(a - b).flatten()
                                                      for a, b in zip(after, before, strict=True)]))
        return {self.regulariser.grad_ratio_key: float(g_extra / g_amort.clamp_min(1e-12))}

    def update(self, buffer: ReplayBuffer, t_env: int, sample_gen: torch.Generator,
               learn_gen: torch.Generator) -> dict[str, float]:
        """One amortized Q-learning step on a recency-filtered sample (empty if none yet)."""
        batch = self.sample(buffer, t_env, sample_gen)
        if batch is None:
            return {}
        losses = self.losses(batch, t_env, learn_gen)
        stats = losses.stats
        stats.update(self.backward(losses))
        clip = self.cfg.grad_norm_clip
        nn.utils.clip_grad_norm_(list(self.critic.parameters()), clip)
        self.critic_opt.step()
        nn.utils.clip_grad_norm_(list(self.policy.parameters()), clip)
        self.policy_opt.step()
        if self.regulariser is not None:
            self.regulariser.step()
        self.n_alloc_updates += 1
        if self.n_alloc_updates % self.cfg.alloc_target_update_interval == 0:
            self.target_critic.load_state_dict(self.critic.state_dict())
        return stats

    def _stats(self, d: dict[str, torch.Tensor], out: AllocOutput, log_pi_best: torch.Tensor,
               dp: torch.Tensor) -> dict[str, float]:
        per_task = d["alloc"].sum(1)  # (M, K) agents on each subtask (executed allocation)
        occupied = (per_task > 0).float() * d["task_mask"].float()
        n_distinct = torch.bincount(out.leaf_row, minlength=len(dp)).float()  # (M,)
        return {
            "alloc/entropy": float(out.entropy.detach().mean()) / self.n_agents,
            "alloc/best_prob": float(out.max_prob.mean()),
            "alloc/argmax_joint_prob": float(log_pi_best.detach().exp().mean()),
            "alloc/distinct_proposals": float(n_distinct.mean()),
            "alloc/agents_per_task": float(per_task.sum() / occupied.sum().clamp_min(1.0)),
            "alloc/tasks_covered": float(subtask_coverage(d["alloc"], d["task_mask"])),
        }

    def modules(self) -> dict[str, Any]:
        """Checkpointed state, by name."""
        return {"policy": self.policy, "critic": self.critic, "target_critic": self.target_critic,
                "critic_opt": self.critic_opt, "policy_opt": self.policy_opt,
                "alloc_reward_ms": self.alloc_reward_ms}
