"""QMIX (Rashid et al. 2018, arXiv 1803.11485) as in EPyMARL, with kaleibench's decisions.

Differences from EPyMARL: the last step's reward is kept; one gradient update per collected
episode whatever ``n_envs`` is. Like EPyMARL on MPE, reaching a time limit that is part of the task
(every MPE task) is terminal: the 25-step return is the whole objective, so bootstrapping through
step 25 would only add an extrapolated tail γ^(25−t)·V(s₂₅) that no reward anchors
(``timeout_is_terminal`` can force either behaviour).

The learner is assembled from parts (agent network, mixer, TD loss, optional regulariser) so that
variants such as Kalei-QMIX add a loss term and hooks instead of copying the update.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union

import numpy as np
import torch
from torch import nn

from kaleibench.algos.base import EnvInfo, done_mask, resolve_timeout_is_terminal
from kaleibench.algos.qlearning import QLearningConfig
from kaleibench.algos.target_cache import TargetQCache
from kaleibench.envs.base import TimeStep
from kaleibench.losses import (
    RunningMeanStd,
    double_q_next_values,
    lambda_targets,
    masked_td_loss,
    masked_td_loss_and_gradient,
    native_td,
    return_bound,
    taken_action_gradient,
    taken_action_values,
    td_targets,
)
from kaleibench.nn import native_agent, native_mix
from kaleibench.nn.mixers import QMixer
from kaleibench.nn.rnn_agent import GruAgent, MlpAgent
from kaleibench.train.buffer import EpisodeBatch, ReplayBuffer
from kaleibench.train.metrics import IntervalStats
from kaleibench.train.optim import adam_step, clip_grad_norm
from kaleibench.train.schedules import LinearSchedule
from kaleibench.utils.seeding import torch_stream

if TYPE_CHECKING:
    from kaleibench.nn.kalei_agent import Rnn1R3Agent


@dataclass(frozen=True)
class QmixConfig(QLearningConfig):
    """QMIX hyperparameters: EPyMARL's QMIX defaults for MPE, with a GRU agent."""

    agent: str = "gru"
    """Agent network: ``gru`` (fc→GRU→fc); ``mlp`` (3 fc, EPyMARL's ``use_rnn: False``);
    ``gru-1r3`` (fc→GRU→3 fc, Kalei's matched baseline)."""
    obs_agent_id: bool = True
    """Append the agent's one-hot id to its observation."""
    obs_last_action: bool = False
    """Append the agent's previous action (one-hot) to its observation."""
    updates_per_episode: int = 1
    """Gradient updates per collected episode (B per batch of B rows)."""
    target_tau: float = 0.0
    """Polyak rate: θ⁻ ← τθ + (1−τ)θ⁻ after every update; 0 = hard copies instead."""
    td_lambda: float = 0.0
    """λ of TD(λ) targets (pymarl2 uses 0.6); 0 = EPyMARL's 1-step double-Q targets."""
    time_aware: bool = False
    """Append the remaining-time fraction (T − t)/T to every agent's input and to the mixer's
    state (Pardo et al. 2018, "Time Limits in Reinforcement Learning"): with a terminal time
    limit the optimal values depend on t, which the observation alone does not show."""

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "batch_size", "buffer_size", "target_update_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.target_tau <= 1.0:
            raise ValueError(f"target_tau must be in [0, 1], got {self.target_tau}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.td_lambda <= 1.0:
            raise ValueError(f"td_lambda must be in [0, 1], got {self.td_lambda}")
        if self.agent not in AGENTS:
            raise ValueError(f"unknown agent {self.agent!r}; known: {sorted(AGENTS)}")


AGENTS = ("gru", "mlp", "gru-1r3", "kalei-1r3")
TARGET_CHUNK = 256
"""Episodes per target pass when target values are computed ahead of the updates (768 rows
per step on 3 agents: products wide enough to run at the C tiles' full rate, ~4 MB of
values)."""
AgentNet = Union["GruAgent", "MlpAgent", "Rnn1R3Agent"]
"""The recurrent agent networks: one step via ``forward``, whole episodes via ``unroll``."""


class Regulariser(Protocol):
    """An extra loss term composed into the Q-learning update (e.g. Kaleidoscope diversity)."""

    def before_update(self, t_env: int) -> dict[str, float]:
        """Hook before each update (e.g. resets); returns metrics."""
        ...

    def loss(self, td_loss: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted extra loss to add to ``td_loss``, and metrics."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state."""
        ...


def build_agent(cfg: QmixConfig, input_dim: int, info: EnvInfo, gen: torch.Generator) -> AgentNet:
    """The agent network named by ``cfg.agent``; initialised from ``gen`` (no global RNG)."""
    agent: AgentNet
    if cfg.agent == "gru":
        agent = GruAgent(input_dim, cfg.hidden_dim, info.n_actions, info.n_agents)
    elif cfg.agent == "mlp":
        agent = MlpAgent(input_dim, cfg.hidden_dim, info.n_actions, info.n_agents)
    else:
        from kaleibench.nn.kalei_agent import Rnn1R3Agent

        masked = cfg.agent == "kalei-1r3"
        thresholds = {k: getattr(cfg, k) for k in ("threshold_init_scale", "threshold_init_bias")
                      if masked and hasattr(cfg, k)}  # Kalei-QMIX's mask initialisation
        agent = Rnn1R3Agent(input_dim, cfg.hidden_dim, info.n_actions, info.n_agents,
                            masked=masked, generator=gen, **thresholds)
    reinit_(agent, gen)
    return agent


def reinit_(module: nn.Module, gen: torch.Generator) -> None:
    """Re-draw every Linear/GRU weight from ``gen`` with PyTorch's default bounds."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.GRUCell | nn.GRU):
            for _, p in m.named_parameters(recurse=False):
                # nn.Linear: U(±1/√fan_in); recurrent cells: U(±1/√hidden) for every tensor
                fan_in = m.in_features if isinstance(m, nn.Linear) else m.hidden_size
                bound = 1.0 / max(fan_in, 1) ** 0.5
                with torch.no_grad():
                    p.copy_(torch.rand(p.shape, generator=gen) * 2 * bound - bound)


class Qmix:
    """QMIX learner; with ``regulariser`` the update minimises ``td + regulariser``."""

    learns = True
    needs_subtasks = False
    Config = QmixConfig

    def __init__(self, config: QmixConfig, env_info: EnvInfo, seed: int,
                 regulariser: Regulariser | None = None) -> None:
        config = resolve_timeout_is_terminal(config, env_info.task)
        self.cfg, self.info = config, env_info
        n, a = env_info.n_agents, env_info.n_actions
        self.input_dim = env_info.obs_dim + (a if config.obs_last_action else 0) + (
            n if config.obs_agent_id else 0) + (1 if config.time_aware else 0)
        init_gen = torch_stream(seed, "init")
        with torch.random.fork_rng(devices=[]):  # default inits are overwritten from init_gen
            self.agent = build_agent(config, self.input_dim, env_info, init_gen)
            self.mixer = QMixer(n, env_info.state_dim + (1 if config.time_aware else 0),
                                config.mixing_embed_dim, config.hypernet_embed)
        reinit_(self.mixer, init_gen)
        self.target_agent = copy.deepcopy(self.agent)
        self.target_mixer = copy.deepcopy(self.mixer)
        self.params = list(self.agent.parameters()) + list(self.mixer.parameters())
        self.optimiser = torch.optim.Adam(self.params, lr=config.lr, fused=True)  # 1 kernel
        self.buffer = ReplayBuffer(config.buffer_size)
        self.target_cache = TargetQCache(config.buffer_size) if config.target_tau == 0 else None
        """The target networks' values of stored episodes (Q⁻ and the target mixer's weights),
        kept between hard syncs; none with Polyak updates, which change the target each time."""
        self.reward_ms = RunningMeanStd()
        self.epsilon = LinearSchedule(config.epsilon_start, config.epsilon_finish,
                                      config.epsilon_anneal_time)
        self.act_gen = torch_stream(seed, "act")
        self.sample_gen = torch_stream(seed, "sample")
        self.regulariser = regulariser
        self.n_updates = 0
        self._agent_ids = torch.eye(n)  # (N, N)

    # ------------------------------------------------------------------ acting
    def init_hidden(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(GRU state (B, N, H), last actions (B, N), step t = 0) at episode start."""
        return self.agent.init_hidden(batch_size), torch.full(
            (batch_size, self.info.n_agents), -1, dtype=torch.long), 0

    def remaining_time(self, t: torch.Tensor) -> torch.Tensor:
        """(T − t)/T for steps ``t`` (any shape), T = the episode limit: 1 at the start, 0 at
        the last state (the one reached by the final step)."""
        limit = float(self.info.episode_limit)
        return (limit - t.float()).clamp_min(0.0) / limit

    def build_inputs(self, obs: torch.Tensor, last_actions: torch.Tensor,
                     t: torch.Tensor | None = None) -> torch.Tensor:
        """obs (..., N, O) [+ one-hot last action] [+ one-hot id] [+ (T−t)/T] -> (..., N, I).

        ``t`` (broadcastable to obs.shape[:-1]) is the step index; needed when ``time_aware``.
        """
        parts = [obs]
        if self.cfg.obs_last_action:
            onehot = nn.functional.one_hot(last_actions.clamp_min(0), self.info.n_actions)
            parts.append(onehot.float() * (last_actions >= 0).unsqueeze(-1))
        if self.cfg.obs_agent_id:
            parts.append(self._agent_ids.expand(*obs.shape[:-1], -1))
        if self.cfg.time_aware:
            assert t is not None, "time_aware inputs need the step index"
            parts.append(self.remaining_time(t).expand(obs.shape[:-1]).unsqueeze(-1))
        return torch.cat(parts, dim=-1)

    def mixer_state(self, batch: EpisodeBatch) -> torch.Tensor:
        """The mixer's input state (B, T+1, S) [+ (T−t)/T when ``time_aware``]."""
        state = batch["state"]
        if not self.cfg.time_aware:
            return state
        t = torch.arange(state.shape[1])  # (T+1,)
        remaining = self.remaining_time(t).expand(state.shape[:-1]).unsqueeze(-1)
        return torch.cat([state, remaining], dim=-1)

    @torch.no_grad()
    def act(self, ts: TimeStep, hidden: Any, t_env: int, explore: bool) -> tuple[np.ndarray, Any]:
        """ε-greedy (greedy when ``explore`` is False) over available actions, all rows at once."""
        h, last, t = hidden
        obs = torch.from_numpy(ts.obs)  # (B, N, O)
        avail = torch.from_numpy(ts.avail_actions)  # (B, N, A)
        q, h = self.agent(self.build_inputs(obs, last, torch.tensor(t)), h)  # (B, N, A)
        greedy = q.masked_fill(~avail, float("-inf")).argmax(-1)  # (B, N)
        if explore:
            eps = self.epsilon(t_env)
            scores = torch.rand(avail.shape, generator=self.act_gen) * avail  # (B, N, A)
            random_actions = scores.argmax(-1)
            pick_random = torch.rand(greedy.shape, generator=self.act_gen) < eps
            greedy = torch.where(pick_random, random_actions, greedy)
        return greedy.numpy(), (h, greedy, t + 1)

    # ------------------------------------------------------------------ learning
    def unroll(self, agent: AgentNet, batch: EpisodeBatch) -> torch.Tensor:
        """Q-values of ``agent`` over all T+1 steps: (B, T+1, N, A).

        The inputs are built time-major, (T+1, B, N, I) in memory, the layout the recurrent
        agents compute in, and handed over as a (B, T+1, N, I) view of it: their own transpose
        then gives back the contiguous tensor instead of a strided one to copy. They depend on
        the episodes only, so they are built once per batch (kept in ``batch.derived``) and
        serve the online and the target pass alike.
        """
        return agent.unroll(self.agent_inputs(batch).transpose(0, 1))  # whole sequences

    def agent_inputs(self, batch: EpisodeBatch) -> torch.Tensor:
        """The agents' inputs over all T+1 steps, time-major (T+1, B, N, I) and contiguous;
        built once per batch (kept in ``batch.derived``)."""
        inputs = batch.derived.get("agent_inputs")
        if inputs is None:
            obs = batch["obs"].transpose(0, 1)  # (T+1, B, N, O)
            actions = batch["actions"].transpose(0, 1)  # (T, B, N)
            last = (torch.cat([torch.full_like(actions[:1], -1), actions], dim=0)  # (T+1, B, N)
                    if self.cfg.obs_last_action else actions)  # (unused without last actions)
            t = torch.arange(obs.shape[0]).view(-1, 1, 1)  # (T+1, 1, 1)
            inputs = batch.derived["agent_inputs"] = self.build_inputs(obs, last, t)
        return inputs

    def target_values(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Without gradient: Q⁻ of the target agent over all T+1 steps (B, T+1, N, A) and the
        target mixer's weights of the next states s_1..s_T (B, T, ``n_weights``).

        Both depend only on the target networks and the episode: between hard target syncs
        they are read from :class:`TargetQCache`, where :meth:`fill_target_cache` put them
        ahead of the updates; any still missing are computed here (and kept).
        """
        if self.target_cache is None or batch.slots is None or batch.ids is None:
            return self.target_pass(batch)
        b = batch.batch_size
        q, weights = self.target_cache.get(
            batch.slots, batch.ids,
            lambda rows: self.target_pass(batch if len(rows) == b else batch.select(rows)))
        return q, weights

    def target_pass(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Q⁻ (b, T+1, N, A) and the target mixer's weights of s_1..s_T (b, T, W) of ``batch``,
        computed (no gradient)."""
        with torch.no_grad():
            q = self.unroll(self.target_agent, batch)  # (b, T+1, N, A)
            return q, self.target_mixer.hyper(self.mixer_state(batch)[:, 1:])

    def fill_target_cache(self, slots: torch.Tensor) -> None:
        """Compute and keep the target values of the stored episodes at buffer ``slots``, in
        passes of :data:`TARGET_CHUNK` episodes.

        Called for the episodes just stored and, after every target sync, for the whole
        buffer: a few wide passes cost far less than the same values computed a few episodes
        at a time inside the updates, where a pass's 26 sequential steps cost about the same
        for 3 episodes as for 32 (measured: one missing episode of 32 adds 0.45 ms to a
        ~7 ms update, three add 1 ms, all of them 2.5 ms).
        """
        if self.target_cache is None or len(slots) == 0:
            return
        for chunk in slots.split(TARGET_CHUNK):
            part = self.buffer.episodes(chunk)
            assert part.ids is not None
            self.target_cache.put(chunk, part.ids, self.target_pass(part))

    def td_loss(self, batch: EpisodeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """L_TD = E[(r + γ(1 − d)·Q_tot⁻(s′, argmax_u′ Q(s′,u′)) − Q_tot(s,u))²], filled steps.

        With ``td_lambda`` > 0 the 1-step target becomes the λ-return (:func:`lambda_targets`).
        Logged means over filled steps: ``target_mean`` (the TD target y of Q_tot),
        ``q_tot_mean`` (the mixed Q_tot(s, u)) and ``q_agent_taken_mean`` (an agent's Q of its
        taken action, averaged over agents). EPyMARL's ``target_mean``/``q_taken_mean`` are
        Q_tot quantities divided by N: ours are not divided.
        """
        data = self.loss_data(batch)
        q = self.unroll(self.agent, batch)  # (B, T+1, N, A)
        q_taken = taken_action_values(q, batch["actions"])  # (B, T, N)
        y = self.td_target(batch, data, q.detach())  # (B, T)
        q_tot = self.mixer(q_taken, data["state"][:, :-1])  # (B, T)
        loss = masked_td_loss(q_tot, y, data["mask"])
        return loss, self.loss_stats(float(loss.detach()), q_tot, y, data, q_taken)

    def loss_data(self, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        """The batch's reward (standardised when configured; updates the running moments),
        done and mask (B, T) as floats, and the mixer's state (B, T+1, S)."""
        reward = batch["reward"]
        if self.cfg.standardise_rewards:
            self.reward_ms.update(reward[batch["filled"].bool()])
            reward = self.reward_ms.normalise(reward)
        return {"reward": reward, "mask": batch["filled"].float(),
                "done": done_mask(batch["terminated"], batch["truncated"],
                                  bool(self.cfg.timeout_is_terminal)),
                "state": self.mixer_state(batch)}

    @torch.no_grad()
    def td_target(self, batch: EpisodeBatch, data: dict[str, torch.Tensor],
                  q: torch.Tensor) -> torch.Tensor:
        """y (B, T): the 1-step double-Q target r + γ(1 − d)·Q_tot⁻(s′, argmax_u′ Q(s′, u′))
        from the online agents' Q-values ``q`` (B, T+1, N, A), or the λ-return."""
        q_target_all, target_weights = self.target_values(batch)
        q_target = q_target_all[:, 1:]  # (B, T, N, A)
        online_next = q[:, 1:] if self.cfg.double_q else q_target
        avail_next = batch["avail_actions"].bool()[:, 1:]  # (B, T, N, A)
        q_next = double_q_next_values(online_next, q_target, avail_next)  # (B, T, N)
        target_q_tot_next = self.target_mixer.mix(q_next, target_weights)  # (B, T)
        reward, done, mask = data["reward"], data["done"], data["mask"]
        if self.cfg.td_lambda > 0:
            return lambda_targets(reward, done, mask, target_q_tot_next, self.cfg.gamma,
                                  self.cfg.td_lambda)
        return td_targets(reward, done, target_q_tot_next, self.cfg.gamma)

    def loss_stats(self, loss: float, q_tot: torch.Tensor, y: torch.Tensor,
                   data: dict[str, torch.Tensor], q_taken: torch.Tensor) -> dict[str, float]:
        """The update's logged loss statistics (see :meth:`td_loss`)."""
        means = [loss, *self.logged_means(q_tot, y, data["mask"], q_taken, data["reward"])]
        stats = dict(zip(("loss_td", "td_error_abs", "q_agent_taken_mean", "q_tot_mean",
                          "target_mean", "target_max_abs"), means[:6], strict=True))
        stats.update(self.divergence_stats(means[6]))
        if self.target_cache is not None:
            stats["target_cache_hit_rate"] = self.target_cache.last_hit_rate
        return stats

    def explicit_gradients(self) -> bool:
        """Whether :meth:`td_loss_and_gradients` can compute this learner's update: the plain
        GRU agent, QMIX's mixer and their C kernels, no regulariser."""
        return (self.regulariser is None and type(self.agent) is GruAgent
                and native_agent.available() and native_mix.available(self.mixer.embed_dim)
                and self.agent.fc1.weight.dtype == torch.float32
                and self.mixer.hyper_b1.weight.dtype == torch.float32)

    def td_loss_and_gradients(self, batch: EpisodeBatch
                              ) -> tuple[float, dict[str, float], list[tuple[torch.Tensor,
                                                                              torch.Tensor]]]:
        """:meth:`td_loss`'s loss, statistics and the gradient of every parameter, computed
        without autograd: the same forward operations, then the hand-written backward passes
        of the loss, the mixer, the taken actions and the agent, called in turn.

        The same floats as ``td_loss(batch)[0].backward()`` (tested); what it spares is
        autograd's engine (its nodes, views and 22 gradient accumulations: ~0.25 ms of a
        ~2.5 ms backward pass, AMD EPYC family 26). Only when :meth:`explicit_gradients`.
        """
        data = self.loss_data(batch)
        inputs = self.agent_inputs(batch)  # (T+1, B, N, I), contiguous
        t, b, n, i = inputs.shape
        assert isinstance(self.agent, GruAgent)
        agent_params = self.agent.unroll_parameters()
        w1, b1, w_ih, w_hh, b_ih, b_hh, w2, b2 = agent_params  # fc1, GRU, fc2
        q_rows, agent_saved = native_agent.forward_saving(
            inputs.view(t * b * n, i), w1, b1, w_ih, w_hh, b_ih, b_hh, w2, b2, t)
        q = q_rows.view(t, b, n, -1).transpose(0, 1)  # (B, T+1, N, A)
        actions = batch["actions"]
        q_taken = taken_action_values(q, actions)  # (B, T, N); no autograd here: a gather
        y = self.td_target(batch, data, q)
        mixer_params = self.mixer.node_parameters()
        state = data["state"][:, :-1]  # (B, T, S)
        q_tot_rows, mix_saved = native_mix.forward_saving(
            q_taken.reshape(-1, n), state.reshape(-1, state.shape[-1]), tuple(mixer_params))
        q_tot = q_tot_rows.view(b, t - 1)
        loss, g_q_tot = masked_td_loss_and_gradient(q_tot, y, data["mask"])
        g_taken, mixer_grads = native_mix.backward(mix_saved, g_q_tot.reshape(-1))
        assert g_taken is not None
        g_q = taken_action_gradient(q.shape, q.stride(), actions, g_taken.view(b, t - 1, n))
        agent_grads = native_agent.backward(agent_saved,
                                            g_q.transpose(0, 1).reshape(t * b * n, -1))
        stats = self.loss_stats(loss, q_tot, y, data, q_taken)
        grads: list[tuple[torch.Tensor, torch.Tensor]] = [
            *zip(agent_params, agent_grads, strict=True),
            *zip(mixer_params, mixer_grads, strict=True)]
        return loss, stats, grads

    @staticmethod
    @torch.no_grad()
    def logged_means(q_tot: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                     q_taken: torch.Tensor, reward: torch.Tensor) -> list[float]:
        """Over filled steps (n = max(Σ mask, 1)): mean |Q_tot − y|, mean over agents of the
        taken actions' Q, mean Q_tot, mean y, max |y| and max |reward| (0 without filled
        steps). Logging only; one C call where the kernels run (sums in double), else torch."""
        fast = native_td.td_stats(q_tot, y, mask, q_taken, reward)
        if fast is not None:
            return fast
        n = mask.sum().clamp_min(1.0)
        filled = mask.bool()
        return torch.stack([  # every scalar in one tensor: one read instead of six
            ((q_tot - y).abs() * mask).sum() / n, (q_taken.mean(-1) * mask).sum() / n,
            (q_tot * mask).sum() / n, (y * mask).sum() / n,
            torch.where(filled, y.abs(), 0.0).max(), torch.where(filled, reward.abs(), 0.0).max(),
        ]).tolist()

    def divergence_stats(self, reward_max_abs: float) -> dict[str, float]:
        """The divergence monitor: are the targets larger than the rewards can justify?

        With ``target_max_abs`` = max |y| over filled steps (logged by :meth:`td_loss`):
        ``target_bound`` = the bound of :func:`~kaleibench.losses.return_bound` for this batch's
        largest |(standardised) reward| ``reward_max_abs`` and the run's horizon (the episode
        limit when it is terminal, infinite when bootstrapped); ``reward_mu`` /
        ``reward_sigma`` are the standardiser's running moments.
        """
        horizon = self.info.episode_limit if self.cfg.timeout_is_terminal else None
        return {
            "target_bound": return_bound(reward_max_abs, self.cfg.gamma, horizon),
            "reward_mu": float(self.reward_ms.mean),
            "reward_sigma": float(self.reward_ms.var**0.5),
        }

    def apply_gradients(self, loss: torch.Tensor | None,
                        grads: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> float:
        """Adam step on agent + mixer after clipping the global grad norm; returns the norm.
        The gradients are ``loss``'s (autograd, into each parameter's ``.grad``), or given as
        (parameter, gradient) pairs, which go to clip and Adam as they are (``.grad`` is not
        set: 44 attribute writes and reads less). Either way in the parameters' own order, the
        order of the clip's norms."""
        for p in self.params:  # = optimiser.zero_grad(set_to_none=True), without its wrapper
            if p.grad is not None:
                p.grad = None
        if grads is None:
            assert loss is not None
            loss.backward()
            params: list[torch.Tensor] = [p for p in self.params if p.grad is not None]
            tensors = [p.grad for p in params if p.grad is not None]
        else:
            given = {id(param): grad for param, grad in grads}
            params = [p for p in self.params if id(p) in given]
            tensors = [given[id(p)] for p in params]
        norm = clip_grad_norm(tensors, self.cfg.grad_norm_clip)  # = clip_grad_norm_, less work
        adam_step(self.optimiser, params, tensors)  # = self.optimiser.step(), less overhead
        return norm

    def update(self, t_env: int) -> dict[str, float]:
        """One gradient update on a sampled batch: targets → loss → step → target sync."""
        stats: dict[str, float] = {}
        if self.regulariser is not None:
            stats.update(self.regulariser.before_update(t_env))
        batch = self.buffer.sample(self.cfg.batch_size, self.sample_gen)
        if self.explicit_gradients():  # the same update without autograd's engine
            td_value, td_stats, grads = self.td_loss_and_gradients(batch)
            stats.update(td_stats)
            stats["loss"] = td_value
            stats["grad_norm"] = self.apply_gradients(None, grads)
            return self._after_update(stats)
        td, td_stats = self.td_loss(batch)
        stats.update(td_stats)
        loss = td
        if self.regulariser is not None:
            extra, extra_stats = self.regulariser.loss(td)
            loss = td + extra  # ALGO LOGIC: the variant's extra term, one visible sum
            stats.update(extra_stats)
        stats["loss"] = stats["loss_td"] if loss is td else float(loss.detach())
        stats["grad_norm"] = self.apply_gradients(loss)
        return self._after_update(stats)

    def _after_update(self, stats: dict[str, float]) -> dict[str, float]:
        """Count the update and move the target networks (hard sync or Polyak)."""
        self.n_updates += 1
        if self.cfg.target_tau > 0:
            self.soft_update_targets(self.cfg.target_tau)
        elif self.n_updates % self.cfg.target_update_interval == 0:
            self.sync_targets()
        return stats

    def sync_targets(self) -> None:
        """Hard copy online → target; the kept target values are then stale: cleared, and
        computed anew for every stored episode (:meth:`fill_target_cache`)."""
        self.target_agent.load_state_dict(self.agent.state_dict())
        self.target_mixer.load_state_dict(self.mixer.state_dict())
        if self.target_cache is not None:
            self.target_cache.clear()
            self.fill_target_cache(torch.arange(self.buffer.size))

    @torch.no_grad()
    def soft_update_targets(self, tau: float) -> None:
        """θ⁻ ← τθ + (1−τ)θ⁻ for agent and mixer."""
        for online, target in ((self.agent, self.target_agent), (self.mixer, self.target_mixer)):
            for p, p_t in zip(online.parameters(), target.parameters(), strict=True):
                p_t.lerp_(p, tau)

    def train_on(self, batch: EpisodeBatch, t_env: int) -> dict[str, float]:
        """Store the B new episodes (and compute their target values), then
        B × ``updates_per_episode`` updates (once warm); returns the updates' means (sums for
        counts such as ``n_reset``)."""
        self.fill_target_cache(self.buffer.insert(batch))
        interval = IntervalStats()
        for _ in range(batch.batch_size * self.cfg.updates_per_episode):
            if not self.buffer.can_sample(self.cfg.batch_size):
                break
            interval.add(self.update(t_env))
        stats = interval.summary()
        if stats:
            stats["epsilon"] = self.epsilon(t_env)
            stats["n_updates"] = float(self.n_updates)
        return stats

    # ------------------------------------------------------------------ state
    def policy_state(self) -> dict[str, Any]:
        """Agent weights (all acting needs)."""
        return {"agent": copy.deepcopy(self.agent.state_dict())}

    def load_policy_state(self, state: dict[str, Any]) -> None:
        """Load agent weights."""
        self.agent.load_state_dict(state["agent"])

    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-identical resume needs."""
        return {
            "agent": self.agent.state_dict(), "mixer": self.mixer.state_dict(),
            "target_agent": self.target_agent.state_dict(),
            "target_mixer": self.target_mixer.state_dict(),
            "optimiser": self.optimiser.state_dict(), "buffer": self.buffer.state_dict(),
            "reward_ms": self.reward_ms.state_dict(), "n_updates": self.n_updates,
            "act_gen": self.act_gen.get_state(), "sample_gen": self.sample_gen.get_state(),
            "regulariser": self.regulariser.state_dict() if self.regulariser else {},
            "target_cache": (self.target_cache.state_dict() if self.target_cache is not None
                             else None),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.agent.load_state_dict(state["agent"])
        self.mixer.load_state_dict(state["mixer"])
        self.target_agent.load_state_dict(state["target_agent"])
        self.target_mixer.load_state_dict(state["target_mixer"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.buffer.load_state_dict(state["buffer"])
        self.reward_ms.load_state_dict(state["reward_ms"])
        self.n_updates = int(state["n_updates"])
        self.act_gen.set_state(state["act_gen"])
        self.sample_gen.set_state(state["sample_gen"])
        if self.regulariser is not None:
            self.regulariser.load_state_dict(state["regulariser"])
        if self.target_cache is not None:
            if state.get("target_cache") is not None:
                self.target_cache.load_state_dict(state["target_cache"])
            else:  # a checkpoint from before the cache: recompute the target values
                self.target_cache.clear()
