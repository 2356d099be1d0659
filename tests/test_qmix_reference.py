"""The learner's fast update equals a plain reference implementation of the same update.

The reference is written the straightforward way, from the learner's parameters (copied): an
unrolled ``torch.gru_cell`` per step, per-agent masked linear layers, the mixer with its four
hypernetworks applied one by one and ``bmm``, the TD loss with the λ-return recursion spelled
out, ``clip_grad_norm_`` and a plain (unfused) Adam. On one fixed batch the loss, every
gradient, and the parameters after several updates (target syncs included) must agree to float
tolerance.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

import kaleibench
from kaleibench.algos import load_variant
from kaleibench.algos.base import EnvInfo, done_mask
from kaleibench.algos.qmix import Qmix
from kaleibench.train.buffer import EpisodeBatch
from kaleibench.train.rollout import collect

Params = dict[str, Tensor]


def _linear(p: Params, name: str, x: Tensor, n_agents: int) -> Tensor:
    """x (..., N, I) -> (..., N, O); with thresholds, agent k uses its own masked weights."""
    w, b = p[f"{name}.weight"], p[f"{name}.bias"]
    s = p.get(f"{name}.sparse_thresholds")
    if s is None:
        return x @ w.t() + b
    outs = []
    for k in range(n_agents):
        w_k = torch.sign(w) * torch.relu(w.abs() - torch.sigmoid(s[k]))  # (O, I)
        outs.append(x[..., k, :] @ w_k.t() + b)
    return torch.stack(outs, dim=-2)


def _agent_q(p: Params, inputs: Tensor, n_agents: int) -> Tensor:
    """inputs (B, T+1, N, I) -> q (B, T+1, N, A), one GRU cell call per step."""
    b, t_len, n, _ = inputs.shape
    x = torch.relu(_linear(p, "fc1", inputs, n_agents))  # (B, T+1, N, H)
    h = x.new_zeros(b * n, p["rnn.weight_hh_l0"].shape[1])
    hs = []
    for t in range(t_len):
        h = torch.gru_cell(x[:, t].reshape(b * n, -1), h, p["rnn.weight_ih_l0"],
                           p["rnn.weight_hh_l0"], p["rnn.bias_ih_l0"], p["rnn.bias_hh_l0"])
        hs.append(h.view(b, n, -1))
    h_all = torch.stack(hs, dim=1)  # (B, T+1, N, H)
    if "fc4.weight" not in p:  # gru agent: fc1 -> GRU -> fc2
        return _linear(p, "fc2", h_all, n_agents)
    q = torch.relu(_linear(p, "fc2", h_all, n_agents))
    q = torch.relu(_linear(p, "fc3", q, n_agents))
    return _linear(p, "fc4", q, n_agents)


def _mix(p: Params, q: Tensor, state: Tensor, embed: int) -> Tensor:
    """QMIX's mixer: q (B, T, N), state (B, T, S) -> Q_tot (B, T)."""
    n = q.shape[-1]

    def lin(name: str, x: Tensor) -> Tensor:
        return x @ p[f"{name}.weight"].t() + p[f"{name}.bias"]

    s = state.reshape(-1, state.shape[-1])
    w1 = lin("hyper_w1.2", torch.relu(lin("hyper_w1.0", s))).abs().view(-1, n, embed)
    b1 = lin("hyper_b1", s).view(-1, 1, embed)
    hidden = nn.functional.elu(torch.bmm(q.reshape(-1, 1, n), w1) + b1)  # (M, 1, E)
    wf = lin("hyper_wf.2", torch.relu(lin("hyper_wf.0", s))).abs().view(-1, embed, 1)
    v = lin("value.2", torch.relu(lin("value.0", s))).view(-1, 1, 1)
    return (torch.bmm(hidden, wf) + v).view(q.shape[:-1])


def _targets(reward: Tensor, done: Tensor, mask: Tensor, q_next: Tensor, gamma: float,
             lam: float) -> Tensor:
    """y_t = r_t + γ(1 − d_t)[(1 − λ)Q⁻_t + λ y_{t+1}] (λ-return; y_{t+1} only where filled)."""
    y = torch.zeros_like(reward)
    nxt = torch.zeros_like(reward[:, 0])
    for t in range(reward.shape[1] - 1, -1, -1):
        has_next = mask[:, t + 1] if t + 1 < reward.shape[1] else torch.zeros_like(nxt)
        tail = (1 - lam * has_next) * q_next[:, t] + lam * has_next * nxt
        nxt = reward[:, t] + gamma * (1 - done[:, t]) * tail
        y[:, t] = nxt
    return y


def _reference_loss(learner: Qmix, p: Params, p_target: Params, batch: EpisodeBatch) -> Tensor:
    cfg, n = learner.cfg, learner.info.n_agents
    actions = batch["actions"]
    last = torch.cat([torch.full_like(actions[:, :1], -1), actions], dim=1)
    t = torch.arange(batch["obs"].shape[1]).view(1, -1, 1)
    inputs = learner.build_inputs(batch["obs"], last, t)
    mask = batch["filled"].float()
    done = done_mask(batch["terminated"], batch["truncated"], bool(cfg.timeout_is_terminal))
    agent_p = {k[len("agent."):]: v for k, v in p.items() if k.startswith("agent.")}
    mixer_p = {k[len("mixer."):]: v for k, v in p.items() if k.startswith("mixer.")}
    q = _agent_q(agent_p, inputs, n)
    q_taken = q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        tgt_agent = {k[len("agent."):]: v for k, v in p_target.items() if k.startswith("agent.")}
        tgt_mixer = {k[len("mixer."):]: v for k, v in p_target.items() if k.startswith("mixer.")}
        q_target = _agent_q(tgt_agent, inputs, n)[:, 1:]
        avail = batch["avail_actions"].bool()[:, 1:]
        best = q[:, 1:].masked_fill(~avail, float("-inf")).argmax(-1, keepdim=True)
        q_next = q_target.gather(-1, best).squeeze(-1)
        state = learner.mixer_state(batch)
        q_tot_next = _mix(tgt_mixer, q_next, state[:, 1:], cfg.mixing_embed_dim)
        y = _targets(batch["reward"], done, mask, q_tot_next, cfg.gamma, cfg.td_lambda)
    q_tot = _mix(mixer_p, q_taken, state[:, :-1], cfg.mixing_embed_dim)
    return (((q_tot - y) * mask) ** 2).sum() / mask.sum()


def _named(learner: Qmix) -> list[tuple[str, nn.Parameter]]:
    return ([(f"agent.{k}", v) for k, v in learner.agent.named_parameters()]
            + [(f"mixer.{k}", v) for k, v in learner.mixer.named_parameters()])


def _setup(variant: str, **overrides: object) -> tuple[Qmix, EpisodeBatch]:
    env = kaleibench.make("mpe/spread-v0", n_envs=4, seed=0)
    v = load_variant(variant)
    cfg = replace(v.config, batch_size=4, buffer_size=8, standardise_rewards=False,
                  target_update_interval=2, **overrides)
    learner = v.algo_class(cfg, EnvInfo.of(env, 10**6), 0)
    learner.regulariser = None  # the TD update only (the diversity term is not on this path)
    with torch.no_grad():  # targets differ from the online nets, so both passes are exercised
        for p in learner.target_agent.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    batch = collect(env, learner, 0, explore=True, seeds=[1, 2, 3, 4]).batch
    return learner, batch


CASES: list[tuple[str, dict[str, object]]] = [
    ("qmix", {}), ("qmix", {"td_lambda": 0.6}), ("qmix-1r3", {}), ("kalei-qmix", {}),
]


def _copies(learner: Qmix) -> tuple[Params, Params]:
    """Detached copies of the learner's online parameters (requiring grad) and of its target
    networks' parameters, named ``agent.*`` / ``mixer.*``."""
    p = {k: v.detach().clone().requires_grad_(True) for k, v in _named(learner)}
    p_target = {f"agent.{k}": v.detach().clone()
                for k, v in learner.target_agent.named_parameters()}
    p_target |= {f"mixer.{k}": v.detach().clone()
                 for k, v in learner.target_mixer.named_parameters()}
    return p, p_target


@pytest.mark.parametrize(("variant", "overrides"), CASES)
def test_loss_and_gradients_equal_the_reference(variant: str,
                                                overrides: dict[str, object]) -> None:
    learner, batch = _setup(variant, **overrides)
    named = _named(learner)
    p, p_target = _copies(learner)
    loss, _ = learner.td_loss(batch)
    ref = _reference_loss(learner, p, p_target, batch)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(loss, [v for _, v in named])
    ref_grads = torch.autograd.grad(ref, list(p.values()))
    for (name, _), g, r in zip(named, grads, ref_grads, strict=True):
        scale = max(1e-3, float(r.abs().max()))
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5 * scale, msg=f"grad of {name}")


def _reference_updates(learner: Qmix, batch: EpisodeBatch, n_updates: int) -> Params:
    """Plain Adam + clipping + hard target syncs, from the learner's initial weights."""
    p, p_target = _copies(learner)
    opt = torch.optim.Adam(list(p.values()), lr=learner.cfg.lr, foreach=False, fused=False)
    for i in range(1, n_updates + 1):
        opt.zero_grad()
        _reference_loss(learner, p, p_target, batch).backward()
        nn.utils.clip_grad_norm_(list(p.values()), learner.cfg.grad_norm_clip, foreach=False)
        opt.step()
        if i % learner.cfg.target_update_interval == 0:
            p_target = {k: v.detach().clone() for k, v in p.items()}
    return p


@pytest.mark.parametrize(("variant", "overrides"), CASES)
def test_parameters_after_several_updates_equal_the_reference(
        variant: str, overrides: dict[str, object]) -> None:
    """Sampled from the learner's own buffer (all 4 stored episodes every time, in the sampled
    order), so that the target Q-values are computed inside the first update, reused in the
    second, and computed for the whole buffer by each target sync (after updates 2 and 4),
    from which updates 3 and 5 read them."""
    learner, batch = _setup(variant, **overrides)
    expected = _reference_updates(copy.deepcopy(learner), batch, 5)
    learner.buffer.insert(batch)
    hit_rates = []
    for _ in range(5):
        hit_rates.append(learner.update(0)["target_cache_hit_rate"])
    assert hit_rates == [0.0, 1.0, 1.0, 1.0, 1.0]
    for name, value in _named(learner):
        scale = max(1e-3, float(expected[name].detach().abs().max()))
        torch.testing.assert_close(value.detach(), expected[name].detach(), rtol=1e-4,
                                   atol=1e-5 * scale, msg=f"{name} after 5 updates")
