"""Kalei-QMIX: QMIX with Kaleidoscope's learnable per-agent masks (Li et al. 2024, 2410.08540).

Composed from QMIX's parts, as the Kaleidoscope reference for MPE: the 1R3 agent with masks on
fc1-fc4, and a regulariser adding the adaptive-weighted mask-diversity loss and the periodic
reset of connections dead in every mask. The TD part of the update is QMIX's, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kaleibench.algos.base import EnvInfo
from kaleibench.algos.qmix import Qmix, QmixConfig
from kaleibench.nn.kalei_agent import Rnn1R3Agent, sparsity_stats
from kaleibench.nn.kalei_losses import (
    AdaptiveCoefficient,
    mask_diversity_loss,
    reset_dead_connections,
    should_reset,
)
from kaleibench.utils.seeding import torch_stream


@dataclass(frozen=True)
class KaleiQmixConfig(QmixConfig):
    """QMIX fields plus Kaleidoscope's (``Kalei_args`` of the reference's MPE config)."""

    agent: str = "kalei-1r3"
    """Always the masked 1R3 agent."""
    div_coef: float = 0.5
    """Target ratio of the diversity term to the running TD loss."""
    deque_len: int = 100
    """Length of the TD/diversity histories behind the adaptive coefficient."""
    threshold_init_scale: float = 5.0
    """Thresholds start at −(U(0,1)·scale + bias)."""
    threshold_init_bias: float = 5.0
    """See ``threshold_init_scale``."""
    threshold_reset_scale: float = 5.0
    """Reset thresholds are drawn as −(U(0,1)·scale + bias)."""
    threshold_reset_bias: float = 5.0
    """See ``threshold_reset_scale``."""
    reset_interval: int = 200_000
    """Env steps between resets (none in the final interval)."""
    reset_ratio: float = 0.1
    """Fraction of all-agent-dead connections recycled per reset."""
    sparsity_layer_weights: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    """λ_l of the diversity loss for fc1..fc4."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.agent != "kalei-1r3":
            raise ValueError("kalei-qmix requires agent: kalei-1r3")
        if len(self.sparsity_layer_weights) != 4:
            raise ValueError("sparsity_layer_weights needs 4 values (fc1..fc4)")


class KaleiRegulariser:
    """loss = td + c·L_div with c from :class:`AdaptiveCoefficient`; resets before updates."""

    def __init__(self, cfg: KaleiQmixConfig, agent: Rnn1R3Agent, t_max: int, seed: int) -> None:
        self.cfg, self.agent, self.t_max = cfg, agent, t_max
        self.coef = AdaptiveCoefficient(cfg.div_coef, cfg.deque_len)
        self.reset_gen = torch_stream(seed, "algo")
        self.last_reset_t = 0

    def before_update(self, t_env: int) -> dict[str, float]:
        """Recycle dead connections of fc2-fc4 every ``reset_interval`` steps."""
        if not should_reset(t_env, self.last_reset_t, self.cfg.reset_interval, self.t_max):
            return {}
        n_reset = sum(
            reset_dead_connections(layer, self.cfg.reset_ratio, self.cfg.threshold_reset_scale,
                                   self.cfg.threshold_reset_bias, self.reset_gen)
            for layer in self.agent.reset_layers)
        self.last_reset_t = t_env
        return {"n_reset": float(n_reset)}

    def loss(self, td_loss: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """c · L_div, with c a constant (no gradient) from the loss histories."""
        div = mask_diversity_loss(self.agent.mask_layers, self.cfg.sparsity_layer_weights)
        c = self.coef.update(float(td_loss.detach()), float(div.detach()))
        stats = {"div_loss": float(div.detach()), "div_coef": c}
        with torch.no_grad():
            stats.update(sparsity_stats(self.agent))
        return c * div, stats

    def state_dict(self) -> dict[str, Any]:
        """Coefficient histories, reset clock and reset RNG."""
        return {"coef": self.coef.state_dict(), "last_reset_t": self.last_reset_t,
                "reset_gen": self.reset_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.coef.load_state_dict(state["coef"])
        self.last_reset_t = int(state["last_reset_t"])
        self.reset_gen.set_state(state["reset_gen"])


class KaleiQmix(Qmix):
    """Factory: a :class:`Qmix` learner with the masked agent and :class:`KaleiRegulariser`."""

    Config = KaleiQmixConfig

    def __init__(self, config: KaleiQmixConfig, env_info: EnvInfo, seed: int) -> None:
        super().__init__(config, env_info, seed)
        if not isinstance(self.agent, Rnn1R3Agent):
            raise TypeError("kalei-qmix needs the Rnn1R3Agent")
        t_max = env_info.t_max or 10**12
        self.regulariser = KaleiRegulariser(config, self.agent, t_max, seed)
