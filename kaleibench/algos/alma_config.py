"""Configuration of ALMA-alloc and ALMA+MINE (SPEC §3.2, §4.3, Decisions 6-7).

ALMA: Iqbal, Costales, Sha, NeurIPS 2022, arXiv 2206.07505; MINE: arXiv 1801.04062.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlmaConfig:
    """ALMA-alloc hyperparameters (ALMA defaults where they exist, QMIX's otherwise)."""

    embed_dim: int = 128
    """Attention width of the agents, allocation policy and critic (``attn_embed_dim``)."""
    n_heads: int = 4
    """Attention heads."""
    hidden_dim: int = 64
    """Hidden width of the agents' head."""
    mixing_embed_dim: int = 32
    """Per-subtask mixer hidden width."""
    hypernet_embed: int = 64
    """Width of the mixer's entity encoder / hypernetwork input."""
    gamma: float = 0.99
    """Discount factor (low level per step, high level once per segment)."""
    lr: float = 5e-4
    """Adam learning rate of the low level."""
    alloc_lr: float = 5e-4
    """RMSprop learning rate of the allocation policy and critic (separate optimisers)."""
    batch_size: int = 32
    """Episodes per low-level update (and per allocation sample)."""
    buffer_size: int = 5000
    """Replay capacity in episodes."""
    target_update_interval: int = 200
    """Hard copy of the low-level targets every this many updates."""
    alloc_target_update_interval: int = 50
    """Hard copy of the allocation target critic every this many allocation updates."""
    double_q: bool = True
    """Double-Q targets at the low level."""
    epsilon_start: float = 1.0
    """Low-level ε at step 0."""
    epsilon_finish: float = 0.05
    """Low-level ε after annealing."""
    epsilon_anneal_time: int = 50_000
    """Env steps of the low-level ε anneal."""
    grad_norm_clip: float = 10.0
    """Max global gradient norm (each optimiser)."""
    standardise_rewards: bool = True
    """Standardise rewards with running moments (replaces ALMA's PopArt)."""
    timeout_is_terminal: bool | None = None
    """Treat reaching the time limit as terminal. ``None`` (default): as the task declares
    (terminal on every MPE task); ``true``/``false`` force it. Resolved per run."""
    action_length: int = 5
    """Env steps between allocation decisions."""
    n_proposals: int = 32
    """Allocations proposed per decision and scored by the critic."""
    alloc_eps_start: float = 1.0
    """Per-agent probability of a uniformly random subtask, at step 0."""
    alloc_eps_finish: float = 0.0
    """... after annealing."""
    alloc_eps_anneal_frac: float = 0.05
    """Fraction of the run's t_max over which that anneal runs (ALMA: 5 %)."""
    prop_alloc_eps_start: float = 1.0
    """Probability of executing the raw policy sample instead of the critic's argmax, at 0."""
    prop_alloc_eps_finish: float = 0.05
    """... after annealing."""
    prop_alloc_eps_anneal_frac: float = 0.2
    """Fraction of the run's t_max over which that anneal runs (ALMA: 20 %)."""
    entropy_coef: float = 0.01
    """Weight of the proposal-entropy bonus in the amortisation loss."""
    decay_old: int = 150_000
    """Allocation data older than this (env steps) is not sampled; newer is down-weighted."""
    alloc_batch_size: int = 32
    """Episodes sampled for one allocation update (their decision points, capped by max_bs)."""
    max_bs: int = 400
    """Maximum decision points per allocation update."""

    def __post_init__(self) -> None:
        for name in ("embed_dim", "n_heads", "batch_size", "buffer_size", "action_length",
                     "n_proposals", "target_update_interval", "alloc_target_update_interval",
                     "decay_old", "max_bs", "alloc_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim % self.n_heads:
            raise ValueError(f"embed_dim {self.embed_dim} not divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")


@dataclass(frozen=True)
class AlmaMineConfig(AlmaConfig):
    """ALMA-alloc plus the MINE term of SPEC §4.3."""

    mi_weight: float = 1e-3
    """Weight of the MI loss in the allocation-policy objective (RACE's state_alpha)."""
    mi_embed_dim: int = 128
    """Embedding width of the MINE statistics network."""
    mi_detach_global: bool = False
    """Stop gradients through the global task summary (only the agent side adapts)."""
