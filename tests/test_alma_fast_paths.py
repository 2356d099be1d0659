"""The optimised ALMA update equals the straightforward reference paths (tests/alma_reference.py)
on fixed batches: same samples, same losses and gradients to float tolerance. The attention
every network uses is checked against textbook attention on its own."""

from __future__ import annotations

import copy

import pytest
import torch
from alma_reference import (
    alloc_losses,
    critic_rows,
    plain_attention,
    plain_subtask_mix,
    policy_rows,
    td_loss,
)

from kaleibench.algos.alma import Alma, AlmaConfig
from kaleibench.algos.base import EnvInfo
from kaleibench.envs import make
from kaleibench.nn.attention import EntityAttention, SubtaskMixer, scaled_softmax
from kaleibench.train.buffer import EpisodeBatch
from kaleibench.train.rollout import collect

SMALL = dict(embed_dim=16, n_heads=2, hidden_dim=16, mixing_embed_dim=8, hypernet_embed=16,
             batch_size=8, alloc_batch_size=8, n_proposals=32, buffer_size=50)
TOL = dict(rtol=1e-4, atol=1e-6)


def _setup(mixer: str = "attention", timeout_is_terminal: bool | None = None
           ) -> tuple[Alma, EpisodeBatch]:
    env = make("mpe/spread-v0", n_envs=8, seed=0, backend="numpy")
    config = AlmaConfig(**SMALL, mixer=mixer, timeout_is_terminal=timeout_is_terminal)
    algo = Alma(config, EnvInfo.of(env, 10_000), 0)
    batch = collect(env, algo, 100, explore=True, seeds=list(range(8))).batch
    batch.data["t_added"] = torch.full((8,), 100, dtype=torch.long)
    return algo, batch


def _grads(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _attention_case(b: int = 7, e: int = 6, n_q: int = 3, masked: bool = True
                    ) -> tuple[EntityAttention, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)  # float64: the comparison is of formulas
    attn = EntityAttention(16, 4).double()
    for p in attn.parameters():
        p.data = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5
    x = torch.randn(b, e, 16, generator=gen, dtype=torch.float64)
    allowed = torch.ones(b, n_q, e, dtype=torch.bool)
    if masked:
        allowed = torch.rand(b, n_q, e, generator=gen) > 0.4
        allowed[0, 1] = False  # a query that may attend to nothing
        allowed[1] = True  # a row with nothing masked
    return attn, x, allowed


@pytest.mark.parametrize("masked", [True, False])
def test_entity_attention_equals_textbook_attention(masked: bool) -> None:
    attn, x, allowed = _attention_case(masked=masked)
    x = x.requires_grad_()
    out, ref = attn(x, allowed, 3), plain_attention(attn, x, allowed, 3)
    torch.testing.assert_close(out, ref)
    if masked:
        assert torch.equal(out[0, 1], torch.zeros(16, dtype=torch.float64))
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    params = [x, *attn.parameters()]
    for g, r in zip(_grads((out * w).sum(), params), _grads((ref * w).sum(), params), strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r)


def test_entity_attention_on_distinct_rows_equals_textbook_attention() -> None:
    attn, _, allowed = _attention_case()
    gen = torch.Generator().manual_seed(4)
    x_u = torch.randn(9, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    inv = torch.randint(0, 9, (7, 6), generator=gen)  # repeated rows within and across rows
    out = attn.forward_distinct(x_u, inv, allowed, 3)
    ref = plain_attention(attn, x_u[inv], allowed, 3)
    torch.testing.assert_close(out, ref)
    w = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    params = [x_u, *attn.parameters()]
    for g, r in zip(_grads((out * w).sum(), params), _grads((ref * w).sum(), params), strict=True):
        torch.testing.assert_close(g, r)


def test_scaled_softmax_equals_softmax_and_its_gradient() -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 3, 6, generator=gen, dtype=torch.float64)
    mask = torch.rand(4, 3, 6, generator=gen) > 0.3
    mask[:, :, 0] = True
    masked = logits.masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(scaled_softmax(masked, 0.7), torch.softmax(0.7 * masked, -1))
    empty = torch.full((2, 6), float("-inf"))
    assert torch.equal(scaled_softmax(empty, 0.7), torch.zeros(2, 6))
    assert torch.autograd.gradcheck(lambda t: scaled_softmax(t, 0.7),
                                    (logits.clone().requires_grad_(),))


def test_subtask_mixer_equals_its_formula() -> None:
    gen = torch.Generator().manual_seed(8)
    mixer = SubtaskMixer(10, embed_dim=8, hypernet_embed=16).double()
    for p in mixer.parameters():
        p.data = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5
    b, n, e, k = 5, 3, 7, 3
    q = torch.randn(b, n, generator=gen, dtype=torch.float64, requires_grad=True)
    ent = torch.randn(b, e, 10, generator=gen, dtype=torch.float64)
    e2t = torch.zeros(b, e, k, dtype=torch.float64)
    e2t[:, :n] = torch.nn.functional.one_hot(torch.randint(0, k, (b, n), generator=gen), k)
    e2t[:, n:] = torch.rand(b, e - n, k, generator=gen, dtype=torch.float64).round()
    emask = torch.rand(b, e, generator=gen) > 0.2
    out, ref = mixer(q, ent, e2t, emask), plain_subtask_mix(mixer, q, ent, e2t, emask)
    torch.testing.assert_close(out, ref)
    w = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    params = [q, *mixer.parameters()]
    for g, r in zip(_grads((out * w).sum(), params), _grads((ref * w).sum(), params), strict=True):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("mixer", ["attention", "subtask"])
def test_low_level_single_online_pass_equals_two_passes(mixer: str) -> None:
    algo, batch = _setup(mixer)
    low = algo.low
    alloc = batch["alloc"][:, :-1]
    assert (alloc[:, 1:] != alloc[:, :-1]).any(), "no allocation change: the fix-up path is idle"
    moments = copy.deepcopy(low.reward_ms)
    loss, stats = low.td_loss(batch)
    low.reward_ms = moments
    ref_loss, ref_stats = td_loss(low, batch)
    torch.testing.assert_close(loss, ref_loss, **TOL)
    for g, r in zip(_grads(loss, low.params), _grads(ref_loss, low.params), strict=True):
        torch.testing.assert_close(g, r, **TOL)
    assert stats.keys() == ref_stats.keys()
    for key in stats:
        assert stats[key] == pytest.approx(ref_stats[key], rel=1e-4, abs=1e-6), key
    # the double-Q argmax input itself: online Q at s' under the allocation of t
    from kaleibench.algos.alma.batch import last_action_onehot, with_alloc

    ent, emask, obs = batch["entities"], batch["entity_mask"], batch["obs_mask"]
    last = last_action_onehot(batch["actions"], low.info.n_actions)
    e2t_next = with_alloc(batch["entity2task"][:, 1:], alloc)
    e2t_all = with_alloc(batch["entity2task"], torch.cat([alloc, alloc[:, -1:]], 1))
    with torch.no_grad():
        q_all = low.agent_q(low.agent, ent, emask, obs, e2t_all, last)
        fast = low._online_next(q_all, alloc, ent, emask, obs, e2t_next, last)
        plain = low.agent_q(low.agent, ent[:, 1:], emask[:, 1:], obs[:, 1:], e2t_next, last[:, 1:])
    torch.testing.assert_close(fast, plain, **TOL)


def test_policy_trie_pass_equals_rowwise_pass() -> None:
    algo, _ = _setup()
    b, n, k, e = 6, 3, 3, 6
    gen = torch.Generator().manual_seed(1)
    ent = torch.randn(b, e, 10, generator=gen)
    emask = torch.ones(b, e, dtype=torch.bool)
    emask[1, 2] = False  # an absent agent
    e2t = torch.zeros(b, e, k)
    e2t[:, n:] = torch.eye(k)
    tmask = torch.ones(b, k, dtype=torch.bool)
    tmask[2, 0] = False  # an inactive subtask
    last = torch.nn.functional.one_hot(torch.randint(0, k, (b, n), generator=gen), k).float()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    out = algo.policy(ent, emask, e2t, tmask, last, 32, g1)
    allocs, log_pi, entropy, max_prob = policy_rows(algo.policy, ent, emask, e2t, tmask, last,
                                                    32, g2)
    assert torch.equal(out.allocs, allocs)
    assert torch.equal(g1.get_state(), g2.get_state())  # the same random stream consumed
    torch.testing.assert_close(out.log_pi, log_pi, **TOL)
    torch.testing.assert_close(out.entropy, entropy, **TOL)
    torch.testing.assert_close(out.max_prob, max_prob, **TOL)
    w = torch.randn(b, 32, generator=gen)
    params = list(algo.policy.parameters())
    for g, r in zip(_grads((out.log_pi * w).sum() + out.entropy.sum(), params),
                    _grads((log_pi * w).sum() + entropy.sum(), params), strict=True):
        torch.testing.assert_close(g, r, **TOL)
    # the leaves are exactly the distinct proposals of each row, and there are fewer than P
    for row in range(b):
        leaves = out.leaf_allocs[out.leaf_row == row]
        assert len(leaves) == len(torch.unique(allocs[row].flatten(1), dim=0)) < 32
        assert torch.equal(out.allocs[row], leaves[out.proposal_leaf.reshape(b, 32)[row]
                                                  - int((out.leaf_row < row).sum())])


@pytest.mark.parametrize("timeout_is_terminal", [None, False])  # MPE: None → terminal
def test_allocation_losses_equal_reference(timeout_is_terminal: bool | None) -> None:
    algo, batch = _setup(timeout_is_terminal=timeout_is_terminal)
    high = algo.high
    moments = copy.deepcopy(high.alloc_reward_ms)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    losses = high.losses(batch, 100, g1)
    high.alloc_reward_ms = moments
    critic_loss, amort, pi_loss = alloc_losses(high, batch, 100, g2)
    assert torch.equal(g1.get_state(), g2.get_state())
    assert losses.stats["alloc/distinct_proposals"] < SMALL["n_proposals"]
    torch.testing.assert_close(losses.critic_loss, critic_loss, **TOL)
    torch.testing.assert_close(losses.amort, amort, **TOL)
    torch.testing.assert_close(losses.pi_loss, pi_loss, **TOL)
    for net, new, ref in ((high.critic, losses.critic_loss, critic_loss),
                          (high.policy, losses.pi_loss, pi_loss)):
        params = list(net.parameters())
        for g, r in zip(_grads(new, params), _grads(ref, params), strict=True):
            torch.testing.assert_close(g, r, **TOL)
    # metrics whose arithmetic is unchanged are equal exactly
    assert losses.stats["alloc/critic_loss"] == float(critic_loss)


def test_critic_scores_distinct_rows_like_all_proposals() -> None:
    algo, _ = _setup()
    b, n, k, e = 4, 3, 3, 6
    gen = torch.Generator().manual_seed(3)
    ent = torch.randn(b, e, 10, generator=gen)
    emask = torch.ones(b, e, dtype=torch.bool)
    emask[2, 4] = False  # an absent landmark
    e2t = torch.zeros(b, e, k)
    e2t[:, n:] = torch.eye(k)
    e2t[1, n] = 1.0  # an entity in every subtask (as obstacles are in tag)
    out = algo.policy(ent, emask, e2t, torch.ones(b, k, dtype=torch.bool),
                      torch.zeros(b, n, k), 32, gen)
    from kaleibench.algos.alma.acting import score_proposals

    full = critic_rows(algo.critic, ent, emask, e2t, out.allocs, torch.Generator().manual_seed(0))
    fast = score_proposals(algo.critic, ent, emask, e2t, out, torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, full, **TOL)
    params = list(algo.critic.parameters())
    rows = torch.arange(b).repeat_interleave(32)
    flat = out.allocs.flatten(0, 1)
    every = algo.critic.score(ent, emask, e2t, flat, rows, torch.Generator().manual_seed(0))
    w = torch.randn(b * 32, generator=gen)
    for g, r in zip(_grads((every * w).sum(), params),
                    _grads((full.flatten() * w).sum(), params), strict=True):
        torch.testing.assert_close(g, r, **TOL)
