"""ALMA-alloc: hierarchical subtask allocation by amortized Q-learning.

ALMA: Iqbal, Costales, Sha, "ALMA: Hierarchical Learning for Composite Multi-Agent Tasks",
NeurIPS 2022, arXiv 2206.07505. Written from the paper's description; no reference code copied.

The learner composes three parts, one module each:

* :mod:`~kaleibench.algos.alma.low_level`: subtask-masked entity-attention agents and one Q_tot
  per subtask, trained on the subtask rewards;
* :mod:`~kaleibench.algos.alma.high_level`: the allocation policy and critic (amortized
  Q-learning), one update per low-level update on its own recency-filtered sample;
* :mod:`~kaleibench.algos.alma.acting`: every ``action_length`` steps the policy proposes,
  the critic picks, training explores with ALMA's two schedules (fractions of t_max).

Time limits: when the task declares its limit part of the task (every MPE task) reaching it is
terminal at both levels; otherwise both bootstrap through it (the high level masks the segment).

Deviations (documented): PopArt is replaced by reward standardisation (running moments of the
sampled subtask rewards for the low level and of the team rewards for the allocation critic);
the low level uses Adam like kaleibench's QMIX, the allocation networks RMSprop like ALMA; the
low-level ε anneal is a fraction of the budget (see ``epsilon_anneal_frac``). Greedy evaluation
draws its proposals from its own random stream, so evaluation settings never change training.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from kaleibench.algos.alma.acting import explore as explore_allocation
from kaleibench.algos.alma.acting import propose_and_pick
from kaleibench.algos.alma.batch import with_alloc
from kaleibench.algos.alma.config import AlmaConfig
from kaleibench.algos.alma.high_level import AllocRegulariser, HighLevel
from kaleibench.algos.alma.low_level import LowLevel
from kaleibench.algos.base import EnvInfo, resolve_timeout_is_terminal
from kaleibench.envs.base import TimeStep
from kaleibench.envs.entities import ENTITY_KEYS, entity_layout
from kaleibench.nn.attention import subtask_allowed
from kaleibench.train.buffer import ReplayBuffer
from kaleibench.train.schedules import LinearSchedule
from kaleibench.utils.seeding import torch_stream

__all__ = ["DEFAULT_T_MAX", "Alma", "entity_tensors"]

DEFAULT_T_MAX = 2_050_000
"""Budget assumed for the schedules when the learner is built without one."""


def entity_tensors(info: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The entity view of a TimeStep's info as tensors (task rewards excluded)."""
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
        self.n_agents, self.n_tasks = env_info.n_agents, entity_layout(env_info.task).n_tasks
        gen = torch_stream(seed, "init")
        self.low = LowLevel(config, env_info, gen)
        self.high = HighLevel(config, env_info, self.n_tasks, gen, alloc_regulariser)
        self.regulariser = alloc_regulariser
        if isinstance(alloc_regulariser, nn.Module):
            from kaleibench.algos.qmix import reinit_

            reinit_(alloc_regulariser, gen)
        c = config
        self.buffer = ReplayBuffer(c.buffer_size)
        t_max = env_info.t_max or DEFAULT_T_MAX  # schedules are fractions of the run's budget
        eps_time = c.epsilon_anneal_time or int(c.epsilon_anneal_frac * t_max)
        self.epsilon = LinearSchedule(c.epsilon_start, c.epsilon_finish, eps_time)
        self.alloc_eps = LinearSchedule(c.alloc_eps_start, c.alloc_eps_finish,
                                        int(c.alloc_eps_anneal_frac * t_max))
        self.prop_eps = LinearSchedule(c.prop_alloc_eps_start, c.prop_alloc_eps_finish,
                                       int(c.prop_alloc_eps_anneal_frac * t_max))
        self.act_gen = torch_stream(seed, "act")
        self.eval_gen = torch_stream(seed, "eval")
        self.sample_gen = torch_stream(seed, "sample")
        self.learn_gen = torch_stream(seed, "algo")

    # convenient views of the parts' networks
    agent = property(lambda self: self.low.agent)
    mixer = property(lambda self: self.low.mixer)
    policy = property(lambda self: self.high.policy)
    critic = property(lambda self: self.high.critic)

    # ------------------------------------------------------------------ acting
    def init_hidden(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(last actions (B, N) long, allocation in force (B, N, K), step in episode)."""
        return (torch.full((batch_size, self.n_agents), -1, dtype=torch.long),
                torch.zeros(batch_size, self.n_agents, self.n_tasks), 0)

    @torch.no_grad()
    def allocate(self, ent: dict[str, torch.Tensor], last_alloc: torch.Tensor, t_env: int,
                 explore: bool) -> torch.Tensor:
        """The allocation of a decision point (B, N, K); greedy uses its own random stream."""
        gen = self.act_gen if explore else self.eval_gen
        alloc, out = propose_and_pick(self.high.policy, self.high.critic, ent, last_alloc,
                                      self.cfg.n_proposals, gen)
        if explore:
            alloc = explore_allocation(alloc, out, ent["task_mask"], self.prop_eps(t_env),
                            self.alloc_eps(t_env), gen)
        return alloc

    @torch.no_grad()
    def act(self, ts: TimeStep, hidden: Any, t_env: int, explore: bool) -> tuple[np.ndarray, Any]:
        """Allocate at decision points, then ε-greedy low-level actions within the subtask.

        Writes ``alloc`` (B, N, K) and ``hier_decision`` (B,) into ``ts.info`` for the rollout.
        """
        last, alloc, t = hidden
        ent = entity_tensors(ts.info)
        decision = t % self.cfg.action_length == 0
        if decision:
            alloc = self.allocate(ent, alloc, t_env, explore)
        e2t = with_alloc(ent["entity2task"], alloc)  # (B, E, K)
        allowed = subtask_allowed(ent["obs_mask"], ent["entity_mask"], e2t)  # (B, E, E)
        onehot = nn.functional.one_hot(last.clamp_min(0), self.info.n_actions).float()
        onehot = onehot * (last >= 0)[..., None]  # (B, N, A)
        q = self.low.agent(ent["entities"], onehot, allowed)  # (B, N, A)
        avail = torch.from_numpy(ts.avail_actions)  # (B, N, A)
        greedy = q.masked_fill(~avail, float("-inf")).argmax(-1)  # (B, N)
        if explore:
            scores = torch.rand(avail.shape, generator=self.act_gen) * avail
            pick = torch.rand(greedy.shape, generator=self.act_gen) < self.epsilon(t_env)
            greedy = torch.where(pick, scores.argmax(-1), greedy)
        ts.info["alloc"] = alloc.numpy().astype(np.float32)
        ts.info["hier_decision"] = np.full(len(greedy), decision)
        return greedy.numpy(), (greedy, alloc, t + 1)

    # ------------------------------------------------------------------ learning
    def update(self, t_env: int) -> dict[str, float]:
        """One low-level update, then one allocation update (each on its own sample)."""
        batch = self.buffer.sample(self.cfg.batch_size, self.sample_gen)
        stats = self.low.update(batch)
        stats.update(self.high.update(self.buffer, t_env, self.sample_gen, self.learn_gen))
        return stats

    def train_on(self, batch: Any, t_env: int) -> dict[str, float]:
        """Store the B new episodes (stamped with ``t_env``), then B updates once warm."""
        batch.data["t_added"] = torch.full((batch.batch_size,), t_env, dtype=torch.long)
        self.buffer.insert(batch)
        stats: dict[str, float] = {}
        for _ in range(batch.batch_size):
            if not self.buffer.can_sample(self.cfg.batch_size):
                break
            stats = self.update(t_env)
        if stats:
            stats.update(epsilon=self.epsilon(t_env), n_updates=float(self.low.n_updates))
            stats["alloc/eps"] = self.alloc_eps(t_env)
            stats["alloc/prop_eps"] = self.prop_eps(t_env)
        return stats

    # ------------------------------------------------------------------ state
    _GENS = ("act_gen", "eval_gen", "sample_gen", "learn_gen")

    def _modules(self) -> dict[str, Any]:
        mods: dict[str, Any] = {**self.low.modules(), **self.high.modules(),
                                "buffer": self.buffer}
        if self.regulariser is not None:
            mods["regulariser"] = self.regulariser
            if hasattr(self.regulariser, "optimiser"):
                mods["regulariser_opt"] = self.regulariser.optimiser
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
        state.update(n_updates=self.low.n_updates, n_alloc_updates=self.high.n_alloc_updates)
        state.update({g: getattr(self, g).get_state() for g in self._GENS})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        for k, m in self._modules().items():
            m.load_state_dict(state[k])
        self.low.n_updates = int(state["n_updates"])
        self.high.n_alloc_updates = int(state["n_alloc_updates"])
        for g in self._GENS:
            getattr(self, g).set_state(state[g])
