"""Configuration of ALMA-alloc and ALMA+MINE.

ALMA: Iqbal, Costales, Sha, NeurIPS 2022, arXiv 2206.07505; MINE: Belghazi et al., ICML 2018,
arXiv 1801.04062; RACE (the MINE term's use in MARL): Li et al., ICML 2023.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaleibench.algos.qlearning import QLearningConfig

MIXERS = ("attention", "subtask")
"""Per-subtask mixers: ALMA's attention hyper-network mixer, or the small MLP-encoder one."""


@dataclass(frozen=True)
class AlmaConfig(QLearningConfig):
    """ALMA-alloc hyperparameters: ALMA's defaults where they exist, QMIX's otherwise."""

    hypernet_embed: int = 128
    """Width of the mixer's hyper-networks (ALMA: 128)."""
    epsilon_anneal_time: int = 0
    """Env steps of the low-level ε anneal; 0 (default) = ``epsilon_anneal_frac`` × t_max."""
    epsilon_anneal_frac: float = 0.25
    """Low-level ε anneal as a fraction of the run's budget, like ALMA's allocation schedules.
    0.25 gives 50k steps at a 200k budget (QMIX's anneal) and 512k at 2.05M (ALMA's 500k), so
    the low level explores for the same share of every run and is still exploring while the
    allocation schedules (5 % and 20 % of t_max) run."""
    mixer: str = "attention"
    """``attention``: ALMA's mixer, hyper-networks are masked entity attention (each agent
    attends to the entities of its own subtask), one copy per subtask with the other subtasks'
    agents zeroed, softmax-normalised mixing weights. ``subtask``: a cheaper monotone mixer whose
    subtask state is the mean of an MLP of the subtask's entities (|·| weights)."""
    embed_dim: int = 128
    """Attention width of the agents, allocation policy and critic (``attn_embed_dim``)."""
    n_heads: int = 4
    """Attention heads."""
    alloc_lr: float = 5e-4
    """RMSprop learning rate of the allocation policy and critic (separate optimisers)."""
    alloc_target_update_interval: int = 50
    """Hard copy of the allocation target critic every this many allocation updates."""
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
                     "decay_old", "max_bs", "alloc_batch_size", "hypernet_embed"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim % self.n_heads:
            raise ValueError(f"embed_dim {self.embed_dim} not divisible by n_heads {self.n_heads}")
        if self.mixer == "attention" and self.hypernet_embed % self.n_heads:
            raise ValueError(f"hypernet_embed {self.hypernet_embed} not divisible by n_heads "
                             f"{self.n_heads}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.epsilon_anneal_time < 0 or not 0.0 < self.epsilon_anneal_frac <= 1.0:
            raise ValueError("epsilon_anneal_time must be >= 0 and epsilon_anneal_frac in (0, 1]")
        if self.mixer not in MIXERS:
            raise ValueError(f"unknown mixer {self.mixer!r}; known: {list(MIXERS)}")


@dataclass(frozen=True)
class AlmaMineConfig(AlmaConfig):
    """ALMA-alloc plus a MINE term between agent allocation embeddings and the task summary."""

    mi_weight: float = 10.0
    """Scale of the MI gradient that reaches the allocation policy's shared encoder. The
    statistics network itself always trains on the unweighted MI loss (own optimiser). The
    unweighted MI gradient on the encoder is ~5 % of the amortisation gradient on spread, so 10
    makes the term act (‖∇MI‖ / ‖∇amort‖ ≈ 0.5); 1e-3 left it at ~3e-4 (no effect)."""
    mi_embed_dim: int = 128
    """Embedding width of the MINE statistics network."""
    mi_lr: float = 5e-4
    """Adam learning rate of the MINE statistics network."""
    mi_detach_global: bool = False
    """Stop gradients through the global task summary (only the agent side adapts)."""
