"""Straightforward (slow) reference paths of ALMA's update, for equivalence tests only.

These are the plain implementations the optimised learner must reproduce: textbook masked
multi-head attention, the proposal policy evaluated row by row for all P proposals, the critic
scoring all P proposals, and the low level with separate online passes over steps t and t+1.
"""

from __future__ import annotations

import torch
from torch import nn

from kaleibench.algos.alma.batch import gather_decisions, last_action_onehot, with_alloc
from kaleibench.algos.alma.high_level import HighLevel
from kaleibench.algos.alma.low_level import LowLevel
from kaleibench.algos.base import done_mask
from kaleibench.losses import (
    alloc_critic_loss,
    alloc_td_targets,
    amortisation_loss,
    decay_weights,
    double_q_next_values,
    make_meta_batch,
    masked_td_loss,
    td_targets,
)
from kaleibench.nn.allocation import COUNT_NORM, AllocCritic, AllocPolicy, permuted_tasks
from kaleibench.nn.attention import EntityAttention, SubtaskMixer
from kaleibench.train.buffer import EpisodeBatch


def plain_attention(attn: EntityAttention, x: torch.Tensor, allowed: torch.Tensor,
                    n_queries: int) -> torch.Tensor:
    """``attn``'s weights in textbook masked multi-head attention: x (B, E, D), allowed
    (B, Q, E) -> (B, Q, D), query rows with nothing allowed give 0."""
    b, _, d = x.shape
    h = attn.n_heads
    q, k, v = attn.in_trans(x).chunk(3, dim=-1)  # (B, E, D) each

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, t.shape[1], h, d // h).transpose(1, 2)  # (B, H, ., D/H)

    logits = heads(q[:, :n_queries]) @ heads(k).transpose(-1, -2) / (d // h) ** 0.5
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # (B, H, Q, E)
    out = (weights @ heads(v)).transpose(1, 2).reshape(b, n_queries, d)
    return attn.out_trans(out) * allowed.any(-1, keepdim=True)


def plain_subtask_mix(mixer: SubtaskMixer, q: torch.Tensor, entities: torch.Tensor,
                      entity2task: torch.Tensor, entity_mask: torch.Tensor) -> torch.Tensor:
    """:class:`SubtaskMixer`'s formula written out: ``W1`` on the concatenated pair (a_i, s_k),
    every hyper-network on its own; q (B, N) -> (B, K)."""
    n = q.shape[1]
    z = mixer.encode(entities)
    member = entity2task.to(z.dtype) * entity_mask[..., None].to(z.dtype)
    s_k = member.transpose(1, 2) @ z / member.sum(1)[..., None].clamp_min(1.0)
    k = s_k.shape[1]
    pair = torch.cat([z[:, :n, None].expand(-1, -1, k, -1), s_k[:, None].expand(-1, n, -1, -1)],
                     -1)  # (B, N, K, 2H)
    w1 = mixer.hyper_w1(pair).abs() * member[:, :n, :, None]
    hidden = nn.functional.elu((q[..., None, None] * w1).sum(1) + mixer.hyper_b1(s_k))
    return (hidden * mixer.hyper_wf(s_k).abs()).sum(-1) + mixer.value(s_k).squeeze(-1)


def policy_rows(policy: AllocPolicy, entities: torch.Tensor, entity_mask: torch.Tensor,
                entity2task: torch.Tensor, task_mask: torch.Tensor, last_alloc: torch.Tensor,
                n_proposals: int, gen: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """allocs (B, P, N, K), log_pi (B, P), entropy (B, P), max_prob (B, P) (mean over active
    agents of max_k π): every proposal row computed alone."""
    agent_x, task_x, nonag_cnt = policy.encode(entities, entity_mask, entity2task, last_alloc,
                                               gen)
    b, n, d = agent_x.shape
    k = task_x.shape[1]
    rep = lambda x: x.repeat_interleave(n_proposals, 0)  # noqa: E731
    agents, tasks, cnt = rep(agent_x), rep(task_x), rep(nonag_cnt)
    active_task, active_agent = rep(task_mask), rep(entity_mask[:, :n].float())
    ag_cnt = torch.zeros_like(cnt)
    log_pi = agents.new_zeros(b * n_proposals)
    entropy = agents.new_zeros(b * n_proposals)
    max_prob = agents.new_zeros(b * n_proposals)
    picks = []
    for i in range(n):
        c = policy.count_embed(torch.stack([cnt, ag_cnt], -1))
        logits = ((tasks + c) @ agents[:, i, :, None]).squeeze(-1) / d**0.5
        logits = logits.masked_fill(~active_task, torch.finfo(logits.dtype).min)
        logp = torch.log_softmax(logits, -1)
        u = torch.rand(logits.shape, generator=gen).clamp(1e-10, 1 - 1e-7)
        choice = (logits.detach() - torch.log(-torch.log(u))).argmax(-1)
        log_pi = log_pi + logp.gather(1, choice[:, None]).squeeze(1) * active_agent[:, i]
        entropy = entropy - (logp.exp() * logp).sum(-1) * active_agent[:, i]
        max_prob = max_prob + logp.detach().exp().max(-1).values * active_agent[:, i]
        hard = nn.functional.one_hot(choice, k).float() * active_agent[:, i, None]
        ag_cnt = ag_cnt + hard * COUNT_NORM
        chosen = (tasks * hard[..., None]).sum(1)
        upd = policy.embed_update(torch.relu(torch.cat([chosen, agents[:, i]], -1)))
        tasks = tasks + upd[:, None] * hard[..., None]
        picks.append(hard)
    allocs = torch.stack(picks, 1).reshape(b, n_proposals, n, k)
    max_prob = max_prob / active_agent.sum(1).clamp_min(1.0)
    return (allocs, log_pi.reshape(b, n_proposals), entropy.reshape(b, n_proposals),
            max_prob.reshape(b, n_proposals))


def critic_rows(critic: AllocCritic, entities: torch.Tensor, entity_mask: torch.Tensor,
                entity2task: torch.Tensor, allocs: torch.Tensor, gen: torch.Generator
                ) -> torch.Tensor:
    """Critic values (B, P): every proposal's every entity row computed on its own."""
    b, p, n, k = allocs.shape
    rep = lambda x: x.repeat_interleave(p, 0)  # noqa: E731
    base, present = rep(critic.in_fc(entities)), rep(entity_mask)
    e2t = rep(entity2task.float()).clone()
    e2t[:, :n] = allocs.reshape(b * p, n, k)
    e2t = e2t * present[..., None]
    counts = torch.stack([e2t[:, :n].sum(1), e2t[:, n:].sum(1)], -1) * COUNT_NORM
    count_x = e2t @ critic.count_embed(counts)
    x1 = torch.relu(base + critic.task_embed(permuted_tasks(e2t, gen)) + count_x)
    allowed = present[:, None, :] & present[:, :n, None]
    x2 = torch.relu(plain_attention(critic.attn, x1, allowed, n))
    w = present[:, :n, None].float()
    pooled = (x2 * w).sum(1) / w.sum(1).clamp_min(1.0)
    return critic.out_fc(pooled).reshape(b, p)


def alloc_losses(high: HighLevel, batch: EpisodeBatch, t_env: int, gen: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(critic loss, amortisation loss, full policy loss) of one update, computed plainly."""
    cfg = high.cfg
    team_r = batch["reward"]
    if cfg.standardise_rewards:
        high.alloc_reward_ms.update(team_r[batch["filled"]])
        team_r = high.alloc_reward_ms.normalise(team_r)
    meta = make_meta_batch(team_r, batch["terminated"], batch["truncated"], batch["filled"],
                           batch["hier_decision"][:, :-1], cfg.action_length,
                           bool(cfg.timeout_is_terminal))
    d = gather_decisions(batch, meta)
    ent, emask, e2t = d["entities"], d["entity_mask"], d["entity2task"]
    q = critic_rows(high.critic, ent, emask, e2t, d["alloc"][:, None], gen)[:, 0]
    allocs, log_pi, entropy, _ = policy_rows(high.policy, ent, emask, e2t, d["task_mask"],
                                             d["last_alloc"], cfg.n_proposals, gen)
    with torch.no_grad():
        scores = critic_rows(high.critic, ent, emask, e2t, allocs, gen)  # duplicates too
        best = scores.argmax(1)
        best_alloc = allocs[torch.arange(len(best)), best]
        q_next = critic_rows(high.target_critic, ent, emask, e2t, best_alloc[:, None], gen)[:, 0]
    y = alloc_td_targets(meta.reward, meta.terminated, q_next, cfg.gamma)
    w = meta.mask[:-1] * decay_weights(t_env - d["t_added"], cfg.decay_old)[:-1]
    critic_loss = alloc_critic_loss(q[:-1], y, w)
    log_pi_best = log_pi.gather(1, best[:, None]).squeeze(1)
    amort, pi_loss = amortisation_loss(log_pi_best, entropy, meta.mask, cfg.entropy_coef)
    return critic_loss, amort, pi_loss


def td_loss(low: LowLevel, batch: EpisodeBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """The low-level TD loss with separate online passes over steps 0..T−1 and 1..T."""
    cfg = low.cfg
    now, nxt = slice(0, -1), slice(1, None)
    ent, emask, obs = batch["entities"], batch["entity_mask"], batch["obs_mask"]
    alloc = batch["alloc"][:, :-1]
    e2t = with_alloc(batch["entity2task"][:, :-1], alloc)
    e2t_next = with_alloc(batch["entity2task"][:, 1:], alloc)
    last = last_action_onehot(batch["actions"], low.info.n_actions)
    mask = (batch["filled"].float()[..., None] * batch["task_mask"][:, :-1].float()
            * (alloc.sum(2) > 0).float())
    reward = batch["task_rewards"]
    if cfg.standardise_rewards:
        low.reward_ms.update(reward[mask.bool()])
        reward = low.reward_ms.normalise(reward)
    done = done_mask(batch["terminated"], batch["truncated"], bool(cfg.timeout_is_terminal))
    q = low.agent_q(low.agent, ent[:, now], emask[:, now], obs[:, now], e2t, last[:, now])
    q_taken = q.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        q_next_target = low.agent_q(low.target_agent, ent[:, nxt], emask[:, nxt], obs[:, nxt],
                                    e2t_next, last[:, nxt])
        q_next_online = low.agent_q(low.agent, ent[:, nxt], emask[:, nxt], obs[:, nxt],
                                    e2t_next, last[:, nxt])
        online = q_next_online if cfg.double_q else q_next_target
        q_next = double_q_next_values(online, q_next_target, batch["avail_actions"][:, nxt].bool())
        target_next = low.mix(low.target_mixer, q_next, ent[:, nxt], last[:, nxt], e2t_next,
                              emask[:, nxt])
    q_k = low.mix(low.mixer, q_taken, ent[:, now], last[:, now], e2t, emask[:, now])
    y = td_targets(reward, done[..., None], target_next, cfg.gamma)
    loss = masked_td_loss(q_k, y, mask)
    n = mask.sum().clamp_min(1.0)
    return loss, {"loss_td": float(loss.detach()),
                  "td_error_abs": float(((q_k.detach() - y).abs() * mask).sum() / n),
                  "q_taken_mean": float(q_taken.detach().mean())}
