"""ALMA-alloc: hierarchical subtask allocation by amortized Q-learning on MPE (SPEC §3, Decision 6).

ALMA: Iqbal, Costales, Sha, "ALMA: Hierarchical Learning for Composite Multi-Agent Tasks",
NeurIPS 2022, arXiv 2206.07505. Written from SPEC §3; no reference code copied.

* Low level: feed-forward entity-attention agents (shared parameters, last action on the agent
  rows) whose attention is masked to the agent's subtask; one monotone Q_tot per subtask
  (:class:`SubtaskMixer`), trained on the subtask rewards with double-Q 1-step targets that
  bootstrap through the time limit (Decision 1). The target side uses the allocation of the
  prediction step.
* High level: every ``action_length`` steps the policy proposes ``n_proposals`` allocations,
  the critic scores them, the argmax is executed (with the two exploration schedules of §3.6).
  One allocation update per low-level update, on its own recency-filtered sample.

Deviations (documented): PopArt is replaced by reward standardisation (running moments of the
sampled subtask rewards for the low level and of the team rewards for the allocation critic);
the low level uses Adam like kaleibench's QMIX, the allocation networks RMSprop like ALMA; the
allocation target is the target critic alone (the proposals come from the online policy, §3.7).
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from kaleibench.algos.alma_batch import (
    gather_decisions,
    last_action_onehot,
    random_allocs,
    sample_recent,
    with_alloc,
)
from kaleibench.algos.alma_config import AlmaConfig
from kaleibench.algos.base import EnvInfo, done_mask, resolve_timeout_is_terminal
from kaleibench.algos.qmix import reinit_
from kaleibench.envs.base import TimeStep
from kaleibench.envs.entities import ENTITY_KEYS, N_FEATURES, entity_layout
from kaleibench.losses import RunningMeanStd, double_q_next_values, masked_td_loss, td_targets
from kaleibench.losses_alma import (
    alloc_critic_loss,
    alloc_td_targets,
    amortisation_loss,
    decay_weights,
    make_meta_batch,
)
from kaleibench.nn.allocation import AllocCritic, AllocOutput, AllocPolicy
from kaleibench.nn.attention import EntityAgent, SubtaskMixer, subtask_allowed
from kaleibench.train.buffer import EpisodeBatch, ReplayBuffer
from kaleibench.train.schedules import LinearSchedule
from kaleibench.utils.seeding import torch_stream

__all__ = ["Alma", "AlmaConfig", "AllocRegulariser"]

DEFAULT_T_MAX = 2_050_000
"""Budget assumed for the allocation schedules when the learner is built without one."""


class AllocRegulariser(Protocol):
    """An extra term of the allocation-policy objective, computed from the same policy pass."""

    def parameters(self) -> Any:
        """Parameters optimised with the policy."""
        ...

    def alloc_loss(self, out: AllocOutput, task_mask: torch.Tensor, agent_mask: torch.Tensor,
                   dp_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted loss tensor and metrics."""
        ...


def _tensors(info: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(info[k])) for k in ENTITY_KEYS if k != "task_rewards"}


class Alma:
    """ALMA-alloc learner (see module docstring); ``alloc_regulariser`` adds e.g. MINE."""

    learns = True
    needs_subtasks = True
    Config = AlmaConfig
    extra_fields = (*ENTITY_KEYS, "alloc", "hier_decision")

    def __init__(self, config: AlmaConfig, env_info: EnvInfo, seed: int,
                 alloc_regulariser: AllocRegulariser | None = None) -> None:
        config = resolve_timeout_is_terminal(config, env_info.task)
        self.cfg, self.info = config, env_info
        layout = entity_layout(env_info.task)
        self.n_agents, self.n_tasks, a = env_info.n_agents, layout.n_tasks, env_info.n_actions
        gen = torch_stream(seed, "init")
        c = config
        self.agent = EntityAgent(N_FEATURES, a, c.embed_dim, c.hidden_dim, c.n_heads)
        self.mixer = SubtaskMixer(N_FEATURES, c.mixing_embed_dim, c.hypernet_embed)
        self.policy = AllocPolicy(N_FEATURES, self.n_tasks, c.embed_dim, c.n_heads)
        self.critic = AllocCritic(N_FEATURES, self.n_tasks, c.embed_dim, c.n_heads)
        self.regulariser = alloc_regulariser
        for module in (self.agent, self.mixer, self.policy, self.critic):
            reinit_(module, gen)
        if isinstance(alloc_regulariser, nn.Module):
            reinit_(alloc_regulariser, gen)
        self.target_agent, self.target_mixer = copy.deepcopy(self.agent), copy.deepcopy(self.mixer)
        self.target_critic = copy.deepcopy(self.critic)
        self.params = [*self.agent.parameters(), *self.mixer.parameters()]
        self.pi_params = [*self.policy.parameters()] + (
            [*alloc_regulariser.parameters()] if alloc_regulariser is not None else [])
        self.optimiser = torch.optim.Adam(self.params, lr=c.lr)
        rms = dict(lr=c.alloc_lr, alpha=0.99, eps=1e-5)
        self.critic_opt = torch.optim.RMSprop(self.critic.parameters(), **rms)  # type: ignore
        self.policy_opt = torch.optim.RMSprop(self.pi_params, **rms)  # type: ignore
        self.buffer = ReplayBuffer(c.buffer_size)
        self.reward_ms, self.alloc_reward_ms = RunningMeanStd(), RunningMeanStd()
        self.epsilon = LinearSchedule(c.epsilon_start, c.epsilon_finish, c.epsilon_anneal_time)
        t_max = env_info.t_max or DEFAULT_T_MAX  # schedules are fractions of the run's budget
        self.alloc_eps = LinearSchedule(c.alloc_eps_start, c.alloc_eps_finish,
                                        int(c.alloc_eps_anneal_frac * t_max))
        self.prop_eps = LinearSchedule(c.prop_alloc_eps_start, c.prop_alloc_eps_finish,
                                       int(c.prop_alloc_eps_anneal_frac * t_max))
        self.act_gen = torch_stream(seed, "act")
        self.sample_gen = torch_stream(seed, "sample")
        self.learn_gen = torch_stream(seed, "algo")
        self.n_updates = 0
        self.n_alloc_updates = 0

    # ------------------------------------------------------------------ acting
    def init_hidden(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(last actions (B, N) long, allocation in force (B, N, K), step in episode)."""
        return (torch.full((batch_size, self.n_agents), -1, dtype=torch.long),
                torch.zeros(batch_size, self.n_agents, self.n_tasks), 0)

    @torch.no_grad()
    def allocate(self, ent: dict[str, torch.Tensor], last_alloc: torch.Tensor, t_env: int,
                 explore: bool) -> torch.Tensor:
        """Propose, score with the critic, take the argmax; explore as SPEC §3.6. (B, N, K)."""
        out = self.policy(ent["entities"], ent["entity_mask"], ent["entity2task"],
                          ent["task_mask"], last_alloc, self.cfg.n_proposals, self.act_gen)
        q = self.critic(ent["entities"], ent["entity_mask"], ent["entity2task"], out.allocs,
                        self.act_gen)  # (B, P)
        rows = torch.arange(q.shape[0])
        alloc = out.allocs[rows, q.argmax(1)]  # (B, N, K)
        if explore:
            raw = torch.rand(q.shape[0], generator=self.act_gen) < self.prop_eps(t_env)  # (B,)
            alloc = torch.where(raw[:, None, None], out.allocs[:, 0], alloc)
            rand = random_allocs(ent["task_mask"], self.n_agents, self.act_gen)  # (B, N, K)
            swap = torch.rand(alloc.shape[:2], generator=self.act_gen) < self.alloc_eps(t_env)
            alloc = torch.where(swap[..., None], rand, alloc)
        return alloc

    @torch.no_grad()
    def act(self, ts: TimeStep, hidden: Any, t_env: int, explore: bool) -> tuple[np.ndarray, Any]:
        """Allocate at decision points, then ε-greedy low-level actions within the subtask.

        Writes ``alloc`` (B, N, K) and ``hier_decision`` (B,) into ``ts.info`` for the rollout.
        """
        last, alloc, t = hidden
        ent = _tensors(ts.info)
        decision = t % self.cfg.action_length == 0
        if decision:
            alloc = self.allocate(ent, alloc, t_env, explore)
        e2t = with_alloc(ent["entity2task"], alloc)  # (B, E, K)
        allowed = subtask_allowed(ent["obs_mask"], ent["entity_mask"], e2t)  # (B, E, E)
        onehot = nn.functional.one_hot(last.clamp_min(0), self.info.n_actions).float()
        onehot = onehot * (last >= 0)[..., None]  # (B, N, A)
        q = self.agent(ent["entities"], onehot, allowed)  # (B, N, A)
        avail = torch.from_numpy(ts.avail_actions)  # (B, N, A)
        greedy = q.masked_fill(~avail, float("-inf")).argmax(-1)  # (B, N)
        if explore:
            scores = torch.rand(avail.shape, generator=self.act_gen) * avail
            pick = torch.rand(greedy.shape, generator=self.act_gen) < self.epsilon(t_env)
            greedy = torch.where(pick, scores.argmax(-1), greedy)
        ts.info["alloc"] = alloc.numpy().astype(np.float32)
        ts.info["hier_decision"] = np.full(len(greedy), decision)
        return greedy.numpy(), (greedy, alloc, t + 1)

    # ------------------------------------------------------------------ low level
    def _agent_q(self, agent: nn.Module, batch: EpisodeBatch, step: slice, e2t: torch.Tensor,
                 last_onehot: torch.Tensor) -> torch.Tensor:
        """Q (B, T, N, A) of ``agent`` on the entity states ``step`` with membership e2t."""
        ent, emask = batch["entities"][:, step], batch["entity_mask"][:, step]
        b, t, e, f = ent.shape
        allowed = subtask_allowed(batch["obs_mask"][:, step].flatten(0, 1), emask.flatten(0, 1),
                                  e2t.flatten(0, 1))  # (BT, E, E)
        q = agent(ent.flatten(0, 1), last_onehot.flatten(0, 1), allowed)  # (BT, N, A)
        return q.reshape(b, t, *q.shape[1:])

    def _mix(self, mixer: nn.Module, q: torch.Tensor, batch: EpisodeBatch, step: slice,
             e2t: torch.Tensor) -> torch.Tensor:
        """Per-subtask Q_tot (B, T, K)."""
        ent, emask = batch["entities"][:, step], batch["entity_mask"][:, step]
        b, t = q.shape[:2]
        out = mixer(q.flatten(0, 1), ent.flatten(0, 1), e2t.flatten(0, 1), emask.flatten(0, 1))
        return out.reshape(b, t, -1)

    def td_loss(self, batch: EpisodeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-subtask L_TD = Σ_k E[(r_k + γ(1−d) Q_k⁻(s′, argmax Q) − Q_k(s, u))²] (masked)."""
        now, nxt = slice(0, -1), slice(1, None)
        alloc = batch["alloc"][:, :-1]  # (B, T, N, K) allocation in force at t
        e2t = with_alloc(batch["entity2task"][:, :-1], alloc)  # (B, T, E, K)
        e2t_next = with_alloc(batch["entity2task"][:, 1:], alloc)  # prediction step's allocation
        last = last_action_onehot(batch["actions"], self.info.n_actions)  # (B, T+1, N, A)
        mask = (batch["filled"].float()[..., None] * batch["task_mask"][:, :-1].float()
                * (alloc.sum(2) > 0).float())  # (B, T, K) tasks with ≥ 1 agent
        reward = batch["task_rewards"]  # (B, T, K)
        if self.cfg.standardise_rewards:
            self.reward_ms.update(reward[mask.bool()])
            reward = self.reward_ms.normalise(reward)
        done = done_mask(batch["terminated"], batch["truncated"],
                         bool(self.cfg.timeout_is_terminal))
        q = self._agent_q(self.agent, batch, now, e2t, last[:, :-1])  # (B, T, N, A)
        q_taken = q.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)  # (B, T, N)
        with torch.no_grad():
            q_next_target = self._agent_q(self.target_agent, batch, nxt, e2t_next, last[:, 1:])
            q_next_online = self._agent_q(self.agent, batch, nxt, e2t_next, last[:, 1:])
            online = q_next_online if self.cfg.double_q else q_next_target
            q_next = double_q_next_values(online, q_next_target,
                                          batch["avail_actions"][:, 1:].bool())  # (B, T, N)
            target_next = self._mix(self.target_mixer, q_next, batch, nxt, e2t_next)
        q_k = self._mix(self.mixer, q_taken, batch, now, e2t)  # (B, T, K)
        y = td_targets(reward, done[..., None], target_next, self.cfg.gamma)  # (B, T, K)
        loss = masked_td_loss(q_k, y, mask)
        n = mask.sum().clamp_min(1.0)
        return loss, {"loss_td": float(loss.detach()),
                      "td_error_abs": float(((q_k.detach() - y).abs() * mask).sum() / n),
                      "q_taken_mean": float(q_taken.detach().mean())}

    # ------------------------------------------------------------------ high level
    def alloc_update(self, t_env: int) -> dict[str, float]:
        """One amortized Q-learning step (SPEC §3.7) on a recency-filtered sample."""
        cfg = self.cfg
        per_ep = -(-self.info.episode_limit // cfg.action_length)
        batch = sample_recent(self.buffer, max(2, min(cfg.alloc_batch_size, cfg.max_bs // per_ep)),
                              t_env, cfg.decay_old, self.sample_gen)
        if batch is None:
            return {}
        filled = batch["filled"]
        team_r = batch["reward"]
        if cfg.standardise_rewards:
            self.alloc_reward_ms.update(team_r[filled])
            team_r = self.alloc_reward_ms.normalise(team_r)
        meta = make_meta_batch(team_r, batch["terminated"], batch["truncated"], filled,
                               batch["hier_decision"][:, :-1], cfg.action_length)
        d = gather_decisions(batch, meta)
        ent, emask, e2t = d["entities"], d["entity_mask"], d["entity2task"]
        q = self.critic(ent, emask, e2t, d["alloc"][:, None], self.learn_gen)[:, 0]  # (M,)
        out = self.policy(ent, emask, e2t, d["task_mask"], d["last_alloc"], cfg.n_proposals,
                          self.learn_gen)
        with torch.no_grad():
            scores = self.critic(ent, emask, e2t, out.allocs, self.learn_gen)  # (M, P)
            best = scores.argmax(1)  # (M,)
            best_alloc = out.allocs[torch.arange(len(best)), best]  # (M, N, K)
            q_next = self.target_critic(ent, emask, e2t, best_alloc[:, None],
                                        self.learn_gen)[:, 0]
        y = alloc_td_targets(meta.reward, meta.terminated, q_next, cfg.gamma)  # (M-1,)
        w = meta.mask[:-1] * decay_weights(t_env - d["t_added"], cfg.decay_old)[:-1]
        critic_loss = alloc_critic_loss(q[:-1], y, w)
        log_pi_best = out.log_pi.gather(1, best[:, None]).squeeze(1)  # (M,)
        dp = torch.ones_like(log_pi_best)
        amort, pi_loss = amortisation_loss(log_pi_best, out.entropy, dp, cfg.entropy_coef)
        stats: dict[str, float] = {}
        if self.regulariser is not None:
            extra, extra_stats = self.regulariser.alloc_loss(out, d["task_mask"],
                                                             emask[:, : self.n_agents], dp)
            pi_loss = pi_loss + extra  # ALGO LOGIC: the MI term, one visible sum
            stats.update(extra_stats)
        self._step(self.critic_opt, critic_loss, self.critic.parameters())
        self._step(self.policy_opt, pi_loss, self.pi_params)
        self.n_alloc_updates += 1
        if self.n_alloc_updates % cfg.alloc_target_update_interval == 0:
            self.target_critic.load_state_dict(self.critic.state_dict())
        stats.update(self._alloc_stats(d, out, log_pi_best, critic_loss, amort, pi_loss))
        return stats

    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, params: Any) -> float:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(list(params), self.cfg.grad_norm_clip)
        opt.step()
        return float(norm)

    def _alloc_stats(self, d: dict[str, torch.Tensor], out: AllocOutput, log_pi_best: torch.Tensor,
                     critic_loss: torch.Tensor, amort: torch.Tensor, pi_loss: torch.Tensor
                     ) -> dict[str, float]:
        per_task = d["alloc"].sum(1)  # (M, K) agents on each subtask
        occupied = (per_task > 0).float() * d["task_mask"].float()
        return {
            "alloc/critic_loss": float(critic_loss.detach()),
            "alloc/amort_loss": float(amort.detach()), "alloc/pi_loss": float(pi_loss.detach()),
            "alloc/entropy": float(out.entropy.detach().mean()) / self.n_agents,
            "alloc/best_prob": float(log_pi_best.detach().exp().mean()),
            "alloc/agents_per_task": float(per_task.sum() / occupied.sum().clamp_min(1.0)),
            "alloc/tasks_covered": float(occupied.sum() / d["task_mask"].float().sum()),
        }

    # ------------------------------------------------------------------ driver
    def update(self, t_env: int) -> dict[str, float]:
        """One low-level update, then one allocation update (each on its own sample)."""
        batch = self.buffer.sample(self.cfg.batch_size, self.sample_gen)
        loss, stats = self.td_loss(batch)
        stats["grad_norm"] = self._step(self.optimiser, loss, self.params)
        stats["loss"] = stats["loss_td"]
        self.n_updates += 1
        if self.n_updates % self.cfg.target_update_interval == 0:
            self.target_agent.load_state_dict(self.agent.state_dict())
            self.target_mixer.load_state_dict(self.mixer.state_dict())
        stats.update(self.alloc_update(t_env))
        return stats

    def train_on(self, batch: EpisodeBatch, t_env: int) -> dict[str, float]:
        """Store the B new episodes (stamped with ``t_env``), then B updates once warm."""
        batch.data["t_added"] = torch.full((batch.batch_size,), t_env, dtype=torch.long)
        self.buffer.insert(batch)
        stats: dict[str, float] = {}
        for _ in range(batch.batch_size):
            if not self.buffer.can_sample(self.cfg.batch_size):
                break
            stats = self.update(t_env)
        if stats:
            stats.update(epsilon=self.epsilon(t_env), n_updates=float(self.n_updates))
            stats["alloc/eps"] = self.alloc_eps(t_env)
            stats["alloc/prop_eps"] = self.prop_eps(t_env)
        return stats

    # ------------------------------------------------------------------ state
    def _modules(self) -> dict[str, Any]:
        mods: dict[str, Any] = {
            "agent": self.agent, "mixer": self.mixer, "target_agent": self.target_agent,
            "target_mixer": self.target_mixer, "policy": self.policy, "critic": self.critic,
            "target_critic": self.target_critic, "optimiser": self.optimiser,
            "critic_opt": self.critic_opt, "policy_opt": self.policy_opt, "buffer": self.buffer,
            "reward_ms": self.reward_ms, "alloc_reward_ms": self.alloc_reward_ms,
        }
        if isinstance(self.regulariser, nn.Module):
            mods["regulariser"] = self.regulariser
        return mods

    def policy_state(self) -> dict[str, Any]:
        """What greedy acting needs: agent, allocation policy and critic."""
        return {k: copy.deepcopy(getattr(self, k).state_dict())
                for k in ("agent", "policy", "critic")}

    def load_policy_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`policy_state`."""
        for k in ("agent", "policy", "critic"):
            getattr(self, k).load_state_dict(state[k])

    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-identical resume needs (nets, targets, optimisers, buffer, RNGs)."""
        state = {k: m.state_dict() for k, m in self._modules().items()}
        state.update(n_updates=self.n_updates, n_alloc_updates=self.n_alloc_updates,
                     act_gen=self.act_gen.get_state(), sample_gen=self.sample_gen.get_state(),
                     learn_gen=self.learn_gen.get_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        for k, m in self._modules().items():
            m.load_state_dict(state[k])
        self.n_updates = int(state["n_updates"])
        self.n_alloc_updates = int(state["n_alloc_updates"])
        self.act_gen.set_state(state["act_gen"])
        self.sample_gen.set_state(state["sample_gen"])
        self.learn_gen.set_state(state["learn_gen"])
