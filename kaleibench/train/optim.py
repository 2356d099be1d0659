"""Gradient clipping and the Adam step of the learner's update, without per-call overhead.

Why: ``torch.nn.utils.clip_grad_norm_`` and ``torch.optim.Adam.step`` spend most of their time
on a few dozen small tensors in Python book-keeping (grouping tensors by device and dtype,
hooks, state look-ups), ~0.1-0.2 ms each per update after a backward pass, 2-3 % of a QMIX
update. Both functions here issue the very same kernels in the same order as the torch
functions (``_foreach_norm``, ``vector_norm`` of the stacked norms, ``_foreach_mul_``;
``_fused_adam_``) and count the steps in the same float32 counters (as one tensor's elements),
so they give the same floats
(``tests/test_optim.py``). The optimiser object stays the owner of the state, so checkpoints
are the optimiser's usual ``state_dict``.
"""

from __future__ import annotations

import math
import struct
import weakref

import torch
from torch import Tensor

_COUNTERS: weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple[list[Tensor], Tensor]] = (
    weakref.WeakKeyDictionary())
"""Per optimiser: its states' step counters and the (k,) tensor they are views of."""


def clip_grad_norm(grads: list[Tensor], max_norm: float) -> float:
    """Scale ``grads`` in place so that their global 2-norm is at most ``max_norm``; returns
    the norm before scaling. ‖g‖ = ‖(‖g_1‖, …, ‖g_k‖)‖, coefficient min(1, max/(‖g‖ + 1e-6)),
    as ``clip_grad_norm_(..., foreach=True)`` on CPU computes them."""
    total = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    coef = clip_coefficient(total, max_norm)
    if coef < 1.0:  # a factor of exactly 1 would leave every gradient as it is
        # by a 0-d float32 tensor, as torch's clip does: the same products, and with a Python
        # number torch would convert it for every gradient (~2 µs each)
        torch._foreach_mul_(grads, torch.tensor(coef, dtype=torch.float32))
    return total


_F32 = struct.Struct("f")


def _f32(x: float) -> float:
    """x rounded to float32 (IEEE round to nearest even; beyond float32's range ±inf), as a
    Python float."""
    value: float = _F32.unpack(_F32.pack(x))[0]
    return value


def clip_coefficient(total: float, max_norm: float) -> float:
    """min(1, max_norm / (total + 1e-6)) as torch computes it on a float32 0-d tensor:
    (total + 1e-6) in float32, its reciprocal times max_norm (torch's ``scalar / tensor``),
    clamped at 1. Each operation is done on Python floats (doubles) and rounded to float32:
    with 53 ≥ 2·24 + 2 bits, that double rounding gives the correctly rounded float32 result
    for +, × and ÷, so these are torch's floats without a tensor operation each (tested)."""
    denominator = _f32(_f32(total) + _f32(1e-6))  # > 0: a norm is never negative
    coef = _f32(_f32(1.0 / denominator) * _f32(max_norm))
    return coef if coef < 1.0 or math.isnan(coef) else 1.0


def adam_step(optimiser: torch.optim.Adam, params: list[Tensor] | None = None,
              grads: list[Tensor] | None = None) -> None:
    """One step of a fused Adam (``fused=True``, one parameter group, no AMSGrad) on its own
    state: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ − lr·m̂/(√v̂ + ε). The gradients are
    the parameters' ``.grad``, or ``grads`` of ``params`` (in the group's order; their
    ``.grad`` is then not read). Until the state exists (the first step), and for any other
    configuration, ``optimiser.step()`` itself (given gradients are first put in ``.grad``)."""
    group = optimiser.param_groups[0]
    if params is None or grads is None:
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params if p.grad is not None]
    states = [optimiser.state[p] for p in params if p in optimiser.state]
    simple = (len(optimiser.param_groups) == 1 and group["fused"] and not group["amsgrad"]
              and not group["capturable"] and not group["differentiable"]
              and not group["decoupled_weight_decay"] and len(states) == len(params))
    if not simple:
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimiser.step()
        return
    _step_counters(optimiser, states).add_(1)  # every parameter's step count, one op
    beta1, beta2 = group["betas"]
    torch._fused_adam_(params, grads, [s["exp_avg"] for s in states],
                       [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
                       amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                       weight_decay=group["weight_decay"], eps=group["eps"],
                       maximize=group["maximize"])


def _step_counters(optimiser: torch.optim.Optimizer, states: list[dict[str, Tensor]]) -> Tensor:
    """One (k,) float tensor whose elements are the k states' step counters: each state's
    ``"step"`` (a 0-d tensor, as torch keeps it) is made a view of it, so that one ``add_``
    counts a step for every parameter. ``_foreach_add_(steps, 1)`` issued one ``add_`` per
    parameter on the CPU, each with the scalar's conversion (~55 µs for QMIX's 22 parameters,
    AMD EPYC family 26); the counts are the same floats. Rebuilt, from the current values,
    whenever the states hold other tensors (the first step, a loaded state dict)."""
    steps = [s["step"] for s in states]
    known = _COUNTERS.get(optimiser)
    if known is not None and len(known[0]) == len(steps) and all(
            a is b for a, b in zip(known[0], steps, strict=True)):
        return known[1]
    flat = torch.stack([step.detach().reshape(()) for step in steps])
    for i, state in enumerate(states):
        state["step"] = flat[i]
    _COUNTERS[optimiser] = ([state["step"] for state in states], flat)
    return flat
