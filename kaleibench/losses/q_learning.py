"""Loss terms as pure functions, one per term of the papers' objectives.

Shapes: B episodes, T transitions, N agents, A actions.
"""

from __future__ import annotations

from typing import Any

import torch

from kaleibench.losses import native_td

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
    chosen = native_td.double_q_select(q_online_next, q_target_next, avail_next)
    if chosen is not None:  # the same choice and copy in one C call
        return chosen
    masked = q_online_next.masked_fill(~avail_next, UNAVAILABLE)  # (B, T, N, A)
    best = masked.argmax(dim=-1, keepdim=True)  # (B, T, N, 1)
    return q_target_next.gather(-1, best).squeeze(-1)  # (B, T, N)


def taken_action_values(q: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Q(s_t, u_t) of the taken actions: q (B, T+1, N, A) over all steps, actions (B, T, N) ->
    (B, T, N), i.e. ``q[:, :-1].gather(-1, actions[..., None]).squeeze(-1)``.

    One autograd node (:class:`_TakenActionValues`) instead of the slice, gather and squeeze
    nodes; its gradient is the one they give (the output gradient added into zeros at the taken
    actions), written in ``q``'s own memory layout.
    """
    if not torch.is_grad_enabled() or not q.requires_grad:
        return q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    out: torch.Tensor = _TakenActionValues.apply(q, actions)
    return out


class _TakenActionValues(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(actions)
        ctx.layout = (q.shape, q.stride())  # q's memory layout, for its gradient
        return q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        (actions,) = ctx.saved_tensors
        shape, stride = ctx.layout
        return taken_action_gradient(shape, stride, actions, grad), None


def taken_action_gradient(shape: torch.Size, stride: tuple[int, ...], actions: torch.Tensor,
                          grad: torch.Tensor) -> torch.Tensor:
    """∂L/∂q (B, T+1, N, A), in the memory layout ``stride``, from ∂L/∂(taken values) (B, T, N):
    the gradient added into zeros at the taken actions, as autograd's gather gives it."""
    grad_q = torch.empty_strided(shape, stride).zero_()
    grad_q[:, :-1].scatter_add_(-1, actions.unsqueeze(-1), grad.unsqueeze(-1))
    return grad_q


def td_targets(
    reward: torch.Tensor, terminated: torch.Tensor, target_q_tot_next: torch.Tensor, gamma: float
) -> torch.Tensor:
    """One-step TD target y = r + γ (1 − d) Q_tot⁻(s′, ·).

    ``d`` marks the transitions that end the task: true terminations, plus reaching a time limit
    when that limit is part of the task (:func:`kaleibench.algos.base.done_mask` builds it); a
    truncation that is not terminal bootstraps.

    Args:
        reward: (B, T) team reward (possibly standardised).
        terminated: (B, T) 1.0 where the transition ends the MDP.
        target_q_tot_next: (B, T) target mixer value at s′.
        gamma: discount.

    Returns:
        (B, T) targets, detached.
    """
    return (reward + gamma * (1.0 - terminated) * target_q_tot_next).detach()


def lambda_targets(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    filled: torch.Tensor,
    target_q_tot_next: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """TD(λ) targets (λ-returns, Sutton & Barto eq. 12.3, recursive form), computed backwards.

    With Q⁻_t = Q_tot⁻(s_{t+1}, ·) the target value at the next state::

        y_t = r_t + γ (1 − d_t) [(1 − λ) Q⁻_t + λ y_{t+1}]   if step t+1 is filled,
        y_t = r_t + γ (1 − d_t) Q⁻_t                         at an episode's last filled step.

    ``d`` marks the transitions that end the task (see :func:`td_targets`), so an episode cut by a
    non-terminal truncation bootstraps from the target at its final next state and an ended one
    does not. λ = 0 gives :func:`td_targets`
    exactly; λ = 1 gives the discounted return of the rest of the episode plus γ^k Q⁻ at its
    final next state (0 if terminated). Values at unfilled steps are meaningless (masked out).

    Args:
        reward: (B, T) team reward (possibly standardised).
        terminated: (B, T) 1.0 where the transition ends the MDP.
        filled: (B, T) 1.0 on real transitions; each row's filled steps are a prefix.
        target_q_tot_next: (B, T) target mixer value at s′.
        gamma: discount.
        lam: λ in [0, 1].

    Returns:
        (B, T) targets, detached.
    """
    if lam == 0.0:
        return td_targets(reward, terminated, target_q_tot_next, gamma)
    reward, terminated, boot = reward.detach(), terminated.detach(), target_q_tot_next.detach()
    filled = filled.to(boot.dtype)
    targets = torch.empty_like(boot)  # (B, T)
    t_len = boot.shape[1]
    y_next = torch.zeros_like(boot[:, 0])  # (B,) y_{t+1}
    for t in range(t_len - 1, -1, -1):
        has_next = filled[:, t + 1] if t + 1 < t_len else torch.zeros_like(y_next)  # (B,)
        # (1 − λ) Q⁻_t + λ y_{t+1} where step t+1 is real, else Q⁻_t
        tail = boot[:, t] + lam * has_next * (y_next - boot[:, t])  # (B,)
        y_next = reward[:, t] + gamma * (1.0 - terminated[:, t]) * tail
        targets[:, t] = y_next
    return targets


def masked_td_loss(q_tot: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_TD = Σ mask · (Q_tot − y)² / Σ mask over valid transitions (B, T).

    With ``q_tot``, ``targets`` and ``mask`` of one shape the loss is one autograd node
    (:class:`_MaskedTdLoss`) whose backward pass is the closed form
    ∂L/∂Q_tot = (g / n) · (2 (Q_tot − y) mask) · mask, n = max(Σ mask, 1): the operations, in
    the order, that autograd applies through the division, sum, square, product and difference
    (same floats, tested), without their five nodes.
    """
    if (torch.is_grad_enabled() and q_tot.requires_grad and not targets.requires_grad
            and q_tot.shape == targets.shape == mask.shape):
        loss: torch.Tensor = _MaskedTdLoss.apply(q_tot, targets, mask)
        return loss
    return _masked_td_parts(q_tot, targets, mask)[0]


class _MaskedTdLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q_tot: torch.Tensor, targets: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        loss, td_error, n = _masked_td_parts(q_tot, targets, mask)
        ctx.save_for_backward(td_error, mask, n)
        return loss

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        td_error, mask, n = ctx.saved_tensors
        return _masked_td_gradient(g, td_error, mask, n), None, None


def _masked_td_parts(q_tot: torch.Tensor, targets: torch.Tensor,
                     mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(L_TD = Σ ((Q_tot − y) · mask)² / n, the masked TD errors, n = max(Σ mask, 1))."""
    td_error = (q_tot - targets) * mask
    n = mask.sum().clamp_min(1.0)
    return (td_error**2).sum() / n, td_error, n


def _masked_td_gradient(g: torch.Tensor, td_error: torch.Tensor, mask: torch.Tensor,
                        n: torch.Tensor) -> torch.Tensor:
    """∂L/∂Q_tot = (g / n) · (2 td_error) · mask, for an output gradient g."""
    return (g / n) * (2.0 * td_error) * mask


def masked_td_loss_and_gradient(q_tot: torch.Tensor, targets: torch.Tensor,
                                mask: torch.Tensor) -> tuple[float, torch.Tensor]:
    """L_TD's value and ∂L_TD/∂Q_tot, without autograd: the floats of
    ``masked_td_loss(q_tot, targets, mask)`` and of its backward pass from ``L.backward()``."""
    with torch.no_grad():
        loss, td_error, n = _masked_td_parts(q_tot, targets, mask)
        return float(loss), _masked_td_gradient(torch.ones_like(loss), td_error, mask, n)


def return_bound(max_abs_reward: float, gamma: float, horizon: int | None) -> float:
    """The largest |discounted return| rewards of size ≤ ``max_abs_reward`` can justify.

    B = r_max · Σ_{k=0}^{H−1} γ^k = r_max · (1 − γ^H) / (1 − γ) for a horizon H that ends the task
    (``horizon`` steps), and r_max / (1 − γ) when the learner bootstraps through the limit
    (``horizon=None``). A TD target whose magnitude outruns B is extrapolation, not reward.
    """
    if gamma >= 1.0:
        return max_abs_reward * (horizon if horizon is not None else float("inf"))
    tail = 1.0 if horizon is None else 1.0 - gamma**horizon
    return max_abs_reward * tail / (1.0 - gamma)


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
