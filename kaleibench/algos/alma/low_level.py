"""ALMA's low level: subtask-masked entity-attention agents and one Q_tot per subtask.

Agents are feed-forward entity-attention networks with shared parameters; each agent attends
only to the entities of the subtask it is allocated to. One monotone Q_tot per subtask is trained
on that subtask's reward with double-Q 1-step targets. The target side of step t uses the
allocation in force at t (the one the prediction was made under), also at the decision steps
where the next allocation differs (ALMA's own learner re-reads the next step's allocation for the
online argmax; using the prediction step's for both is the consistent choice).

Speed: the online agent runs once over steps 0..T (the gradient pass) instead of once over
0..T−1 and again over 1..T. Its outputs at step t+1 serve as the double-Q argmax at s′ wherever
the allocation did not change between t and t+1; only the rows where it changed (decision
steps) are re-run under the previous allocation. The numbers are the same as two full passes.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from kaleibench.algos.alma.batch import last_action_onehot, with_alloc
from kaleibench.algos.alma.config import AlmaConfig
from kaleibench.algos.base import EnvInfo, done_mask
from kaleibench.algos.qmix import reinit_
from kaleibench.envs.entities import N_FEATURES
from kaleibench.losses import RunningMeanStd, double_q_next_values, masked_td_loss, td_targets
from kaleibench.nn.attention import (
    EntityAgent,
    SubtaskMixer,
    static_entity_rows,
    subtask_allowed,
)
from kaleibench.nn.mixers import AttentionSubtaskMixer
from kaleibench.train.buffer import EpisodeBatch

__all__ = ["LowLevel", "mixer_entities"]


def mixer_entities(entities: torch.Tensor, last_onehot: torch.Tensor) -> torch.Tensor:
    """Entity features with the agents' last actions appended (zeros on other rows).

    Args:
        entities: (..., E, F); last_onehot: (..., N, A).

    Returns:
        (..., E, F + A).
    """
    n, e = last_onehot.shape[-2], entities.shape[-2]
    pad = last_onehot.new_zeros(*last_onehot.shape[:-2], e - n, last_onehot.shape[-1])
    return torch.cat([entities, torch.cat([last_onehot, pad], -2)], -1)


class LowLevel:
    """Agents, per-subtask mixer, their targets, Adam optimiser and the TD loss."""

    def __init__(self, cfg: AlmaConfig, info: EnvInfo, gen: torch.Generator) -> None:
        self.cfg, self.info = cfg, info
        a = info.n_actions
        self.agent = EntityAgent(N_FEATURES, a, cfg.embed_dim, cfg.hidden_dim, cfg.n_heads)
        self.mixer: nn.Module
        if cfg.mixer == "attention":
            self.mixer = AttentionSubtaskMixer(N_FEATURES + a, cfg.mixing_embed_dim,
                                               cfg.hypernet_embed, cfg.n_heads)
        else:
            self.mixer = SubtaskMixer(N_FEATURES, cfg.mixing_embed_dim, cfg.hypernet_embed)
        for module in (self.agent, self.mixer):
            reinit_(module, gen)
        self.target_agent, self.target_mixer = copy.deepcopy(self.agent), copy.deepcopy(self.mixer)
        self.params = [*self.agent.parameters(), *self.mixer.parameters()]
        self.optimiser = torch.optim.Adam(self.params, lr=cfg.lr)
        self.reward_ms = RunningMeanStd()
        self.n_updates = 0

    # ------------------------------------------------------------------ network passes
    def agent_q(self, agent: nn.Module, entities: torch.Tensor, entity_mask: torch.Tensor,
                obs_mask: torch.Tensor, e2t: torch.Tensor, last_onehot: torch.Tensor,
                dedup: bool = False) -> torch.Tensor:
        """Q (..., N, A) of ``agent`` on entity states with leading dims (...) flattened.

        ``dedup`` (leading dims (B, T) only): entities that never change in an episode go
        through the first layer and key/value projection once per episode (same numbers).
        """
        lead = entities.shape[:-2]
        flat = lambda x: x.reshape(-1, *x.shape[len(lead):])  # noqa: E731
        allowed = subtask_allowed(flat(obs_mask), flat(entity_mask), flat(e2t))  # (R, E, E)
        distinct = static_entity_rows(mixer_entities(entities, last_onehot)) if dedup else None
        q = agent(flat(entities), flat(last_onehot), allowed, distinct)  # (R, N, A)
        return q.reshape(*lead, *q.shape[1:])

    def mix(self, mixer: nn.Module, q: torch.Tensor, entities: torch.Tensor,
            last_onehot: torch.Tensor, e2t: torch.Tensor, entity_mask: torch.Tensor,
            dedup: bool = False) -> torch.Tensor:
        """Per-subtask Q_tot (B, T, K) of chosen-action values q (B, T, N) (``dedup``: as
        :meth:`agent_q`)."""
        b, t = q.shape[:2]
        if isinstance(mixer, SubtaskMixer):
            out = mixer(q.flatten(0, 1), entities.flatten(0, 1), e2t.flatten(0, 1),
                        entity_mask.flatten(0, 1))
        else:
            ent = mixer_entities(entities, last_onehot)  # (B, T, E, F+A)
            distinct = static_entity_rows(ent) if dedup else None
            out = mixer(q.flatten(0, 1), ent.flatten(0, 1), e2t.flatten(0, 1),
                        entity_mask.flatten(0, 1), distinct)
        return out.reshape(b, t, -1)

    # ------------------------------------------------------------------ loss
    def td_loss(self, batch: EpisodeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-subtask L_TD = Σ_k E[(r_k + γ(1−d) Q_k⁻(s′, argmax Q) − Q_k(s, u))²] (masked).

        ``d`` counts a time limit as terminal when ``cfg.timeout_is_terminal`` is set.
        """
        cfg = self.cfg
        ent, emask = batch["entities"], batch["entity_mask"]  # (B, T+1, E, F), (B, T+1, E)
        obs, e2t_static = batch["obs_mask"], batch["entity2task"]
        alloc = batch["alloc"][:, :-1]  # (B, T, N, K) allocation in force at t
        alloc_all = torch.cat([alloc, alloc[:, -1:]], 1)  # (B, T+1, N, K) step T keeps T−1's
        e2t_all = with_alloc(e2t_static, alloc_all)  # (B, T+1, E, K)
        e2t, e2t_next = e2t_all[:, :-1], with_alloc(e2t_static[:, 1:], alloc)
        last = last_action_onehot(batch["actions"], self.info.n_actions)  # (B, T+1, N, A)
        mask = (batch["filled"].float()[..., None] * batch["task_mask"][:, :-1].float()
                * (alloc.sum(2) > 0).float())  # (B, T, K) tasks with ≥ 1 agent
        reward = batch["task_rewards"]  # (B, T, K)
        if cfg.standardise_rewards:
            self.reward_ms.update(reward[mask.bool()])
            reward = self.reward_ms.normalise(reward)
        done = done_mask(batch["terminated"], batch["truncated"], bool(cfg.timeout_is_terminal))
        q_all = self.agent_q(self.agent, ent, emask, obs, e2t_all, last, True)  # (B,T+1,N,A)
        q = q_all[:, :-1]
        q_taken = q.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)  # (B, T, N)
        nxt = slice(1, None)
        with torch.no_grad():
            q_next_target = self.agent_q(self.target_agent, ent[:, nxt], emask[:, nxt],
                                         obs[:, nxt], e2t_next, last[:, nxt], True)
            if cfg.double_q:
                q_next_online = self._online_next(q_all.detach(), alloc, ent, emask, obs,
                                                  e2t_next, last)
            else:
                q_next_online = q_next_target
            q_next = double_q_next_values(q_next_online, q_next_target,
                                          batch["avail_actions"][:, nxt].bool())  # (B, T, N)
            target_next = self.mix(self.target_mixer, q_next, ent[:, nxt], last[:, nxt],
                                   e2t_next, emask[:, nxt], True)
        q_k = self.mix(self.mixer, q_taken, ent[:, :-1], last[:, :-1], e2t, emask[:, :-1],
                       True)  # (B, T, K)
        y = td_targets(reward, done[..., None], target_next, cfg.gamma)  # (B, T, K)
        loss = masked_td_loss(q_k, y, mask)
        n = mask.sum().clamp_min(1.0)
        return loss, {"loss_td": float(loss.detach()),
                      "td_error_abs": float(((q_k.detach() - y).abs() * mask).sum() / n),
                      "q_taken_mean": float(q_taken.detach().mean())}

    def _online_next(self, q_all: torch.Tensor, alloc: torch.Tensor, ent: torch.Tensor,
                     emask: torch.Tensor, obs: torch.Tensor, e2t_next: torch.Tensor,
                     last: torch.Tensor) -> torch.Tensor:
        """Online Q at s_{t+1} under the allocation of t, (B, T, N, A), from the shared pass.

        ``q_all[:, t+1]`` was computed under the allocation of t+1; where that differs from the
        allocation of t (a decision changed it), the row is recomputed.
        """
        out = q_all[:, 1:].clone()  # (B, T, N, A)
        changed = torch.zeros(alloc.shape[:2], dtype=torch.bool)  # (B, T)
        changed[:, :-1] = (alloc[:, 1:] != alloc[:, :-1]).flatten(2).any(-1)
        if changed.any():
            b, t = changed.nonzero(as_tuple=True)
            out[b, t] = self.agent_q(self.agent, ent[b, t + 1], emask[b, t + 1], obs[b, t + 1],
                                     e2t_next[b, t], last[b, t + 1])
        return out

    # ------------------------------------------------------------------ update
    def update(self, batch: EpisodeBatch) -> dict[str, float]:
        """One Adam step on the TD loss; hard target copy on cadence."""
        loss, stats = self.td_loss(batch)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        stats["grad_norm"] = float(nn.utils.clip_grad_norm_(self.params, self.cfg.grad_norm_clip))
        self.optimiser.step()
        stats["loss"] = stats["loss_td"]
        self.n_updates += 1
        if self.n_updates % self.cfg.target_update_interval == 0:
            self.target_agent.load_state_dict(self.agent.state_dict())
            self.target_mixer.load_state_dict(self.mixer.state_dict())
        return stats

    def modules(self) -> dict[str, Any]:
        """Checkpointed state, by name."""
        return {"agent": self.agent, "mixer": self.mixer, "target_agent": self.target_agent,
                "target_mixer": self.target_mixer, "optimiser": self.optimiser,
                "reward_ms": self.reward_ms}
