"""ALMA+MINE: ALMA-alloc plus a MINE (JSD) term in the allocation-policy objective.

ALMA: Iqbal, Costales, Sha, NeurIPS 2022, arXiv 2206.07505. MINE: Belghazi et al., ICML 2018,
arXiv 1801.04062; its use as a MARL regulariser follows RACE (Li et al., ICML 2023). The MI is
between each active agent's allocation embedding and the masked mean of the active task
embeddings, computed once inside the amortisation pass. The statistics network minimises the
unweighted JSD loss with its own Adam; the policy's shared encoder receives ``mi_weight`` × that
loss's gradient, so ``L_π = L_amort − c_H H + mi_weight · L_MI`` as far as the policy is
concerned. Logged: ``alloc/mi_loss``, ``alloc/mi_estimate`` (the JSD bound E_pos − E_neg),
``alloc/mi_pos`` (E_pos alone) and ``alloc/mi_grad_ratio`` (‖∇ MI‖ / ‖∇ amortisation‖ on the
shared encoder). This module only composes :class:`Alma` with :class:`MineRegulariser`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kaleibench.algos.alma.config import AlmaMineConfig
from kaleibench.algos.alma.learner import Alma
from kaleibench.algos.base import EnvInfo
from kaleibench.envs.base import TimeStep
from kaleibench.nn.mine import MineRegulariser
from kaleibench.train.buffer import EpisodeBatch

__all__ = ["AlmaMine"]


class AlmaMine:
    """ALMA-alloc whose allocation policy also maximises the MINE lower bound."""

    learns = True
    needs_subtasks = True
    Config = AlmaMineConfig
    extra_fields = Alma.extra_fields

    def __init__(self, config: AlmaMineConfig, env_info: EnvInfo, seed: int) -> None:
        self.mine = MineRegulariser(config.embed_dim, config.mi_embed_dim, config.mi_weight,
                                    config.mi_detach_global, config.mi_lr, config.grad_norm_clip)
        self.alma = Alma(config, env_info, seed, alloc_regulariser=self.mine)

    def init_hidden(self, batch_size: int) -> Any:
        """See :meth:`Alma.init_hidden`."""
        return self.alma.init_hidden(batch_size)

    def act(self, ts: TimeStep, hidden: Any, t_env: int, explore: bool) -> tuple[np.ndarray, Any]:
        """See :meth:`Alma.act`."""
        return self.alma.act(ts, hidden, t_env, explore)

    def train_on(self, batch: EpisodeBatch, t_env: int) -> dict[str, float]:
        """See :meth:`Alma.train_on`; adds the ``alloc/mi_*`` metrics."""
        return self.alma.train_on(batch, t_env)

    def state_dict(self) -> dict[str, Any]:
        """See :meth:`Alma.state_dict` (the MINE network and its optimiser are included)."""
        return self.alma.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """See :meth:`Alma.load_state_dict`."""
        self.alma.load_state_dict(state)

    def policy_state(self) -> dict[str, Any]:
        """See :meth:`Alma.policy_state`."""
        return self.alma.policy_state()

    def load_policy_state(self, state: dict[str, Any]) -> None:
        """See :meth:`Alma.load_policy_state`."""
        self.alma.load_policy_state(state)
