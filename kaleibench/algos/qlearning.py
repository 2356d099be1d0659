"""The configuration fields shared by kaleibench's value-decomposition Q-learners."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QLearningConfig:
    """Fields every value-decomposition learner of kaleibench shares (QMIX, Kalei-QMIX, ALMA).

    One definition, so that a YAML override means the same thing in every variant.
    """

    hidden_dim: int = 64
    """Hidden width of the agent network's head."""
    mixing_embed_dim: int = 32
    """Mixer hidden width."""
    hypernet_embed: int = 64
    """Hidden width of the mixer's hypernetworks."""
    gamma: float = 0.99
    """Discount factor."""
    lr: float = 5e-4
    """Adam learning rate of the agents and mixer."""
    batch_size: int = 32
    """Episodes per gradient update."""
    buffer_size: int = 5000
    """Replay capacity in episodes."""
    target_update_interval: int = 200
    """Hard copy of the online → target networks every this many updates."""
    double_q: bool = True
    """Select next actions with the online agent, evaluate with the target."""
    epsilon_start: float = 1.0
    """ε at step 0."""
    epsilon_finish: float = 0.05
    """ε after annealing."""
    epsilon_anneal_time: int = 50_000
    """Env steps of the linear ε anneal."""
    grad_norm_clip: float = 10.0
    """Max global gradient norm (each optimiser)."""
    standardise_rewards: bool = True
    """Standardise rewards with running moments of sampled batches."""
    timeout_is_terminal: bool | None = None
    """Treat reaching the time limit as terminal. ``None`` (default): as the task declares
    (terminal on every MPE task); ``true``/``false`` force it. Resolved per run, recorded in
    spec.json."""
