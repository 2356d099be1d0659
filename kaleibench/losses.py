"""Loss terms as pure functions, one per term of the papers' objectives.

Shapes: B episodes, T transitions, N agents, A actions.
"""

from __future__ import annotations

import torch

UNAVAILABLE = float("-inf")
"""Q-value given to unavailable actions before an argmax/max."""


def double_q_next_values(
    q_online_next: torch.Tensor, q_target_next: torch.Tensor, avail_next: torch.Tensor
) -> torch.Tensor:
    """Double-Q: Q⁻(s′, argmax_{u′ available} Q(s′, u′)) per agent.

    Args:
        q_online_next: (B, T, N, A) online agents' Q at s′.
        q_target_next: (B, T, N, A) target agents' Q at s′.
        avail_next: (B, T, N, A) bool, available actions at s′.

    Returns:
        (B, T, N) target-network values of the online argmax actions.
    """
    masked = q_online_next.masked_fill(~avail_next, UNAVAILABLE)  # (B, T, N, A)
    best = masked.argmax(dim=-1, keepdim=True)  # (B, T, N, 1)
    return q_target_next.gather(-1, best).squeeze(-1)  # (B, T, N)


def td_targets(
    reward: torch.Tensor, terminated: torch.Tensor, target_q_tot_next: torch.Tensor, gamma: float
) -> torch.Tensor:
    """One-step TD target y = r + γ (1 − d) Q_tot⁻(s′, ·).

    ``d`` is *termination* only: a time-limit truncation still bootstraps (SPEC Decision 1).

    Args:
        reward: (B, T) team reward (possibly standardised).
        terminated: (B, T) 1.0 where the transition ends the MDP.
        target_q_tot_next: (B, T) target mixer value at s′.
        gamma: discount.

    Returns:
        (B, T) targets, detached.
    """
    return (reward + gamma * (1.0 - terminated) * target_q_tot_next).detach()


def masked_td_loss(q_tot: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_TD = Σ mask · (Q_tot − y)² / Σ mask over valid transitions (B, T)."""
    td_error = (q_tot - targets) * mask  # (B, T)
    return (td_error**2).sum() / mask.sum().clamp_min(1.0)


class RunningMeanStd:
    """Running mean/variance (Chan et al. parallel update), init mean 0, var 1, count 1e-4.

    Used for EPyMARL's reward standardisation: updated with every sampled batch's rewards.
    """

    def __init__(self, epsilon: float = 1e-4) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = epsilon

    def update(self, x: torch.Tensor) -> None:
        """Fold the values of ``x`` (any shape) into the running moments."""
        batch_mean = float(x.mean())
        batch_var = float(x.var(unbiased=False))
        batch_count = x.numel()
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean += delta * batch_count / total
        m2 = (self.var * self.count + batch_var * batch_count
              + delta**2 * self.count * batch_count / total)
        self.var = m2 / total
        self.count = total

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(x − mean) / sqrt(var), as EPyMARL (no epsilon, no clipping)."""
        return (x - self.mean) / (self.var**0.5)

    def state_dict(self) -> dict[str, float]:
        """Checkpointable state."""
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore from :meth:`state_dict`."""
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]
