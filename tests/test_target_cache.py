"""Reused target Q-values: identity by buffer slot and episode, clearing, checkpointing."""

from __future__ import annotations

import io

import pytest
import torch

import kaleibench
from kaleibench.algos import load_variant
from kaleibench.algos.base import EnvInfo
from kaleibench.algos.qmix import Qmix
from kaleibench.algos.target_cache import TargetQCache
from kaleibench.train.buffer import EpisodeBatch, ReplayBuffer
from kaleibench.train.rollout import collect
from kaleibench.utils import native


def _episodes(first: int, n: int) -> EpisodeBatch:
    """n one-field episodes whose content is their number (first, first+1, ...)."""
    return EpisodeBatch({"x": torch.arange(first, first + n, dtype=torch.float32)[:, None]})


def test_the_buffer_numbers_episodes_and_sampled_batches_carry_slot_and_number() -> None:
    buf = ReplayBuffer(4)
    buf.insert(_episodes(0, 3))
    buf.insert(_episodes(3, 3))  # episodes 4 and 5 overwrite slots 0 and 1
    assert buf.ids.tolist() == [4, 5, 2, 3] and buf.inserted == 6
    batch = buf.sample(4, torch.Generator().manual_seed(0))
    assert batch.slots is not None and batch.ids is not None
    assert torch.equal(batch.ids, buf.ids[batch.slots])
    assert torch.equal(batch["x"][:, 0], batch.ids.float())  # the content is the number
    restored = ReplayBuffer(4)
    restored.load_state_dict(buf.state_dict())
    assert torch.equal(restored.ids, buf.ids) and restored.inserted == 6


def test_a_buffer_checkpoint_without_numbers_gets_distinct_ones() -> None:
    buf = ReplayBuffer(5)
    buf.insert(_episodes(0, 3))
    state = buf.state_dict()
    del state["ids"], state["inserted"]  # as written before episodes were numbered
    restored = ReplayBuffer(5)
    restored.load_state_dict(state)
    assert restored.ids[:3].tolist() == [0, 1, 2] and restored.inserted == 3
    restored.insert(_episodes(3, 1))
    assert restored.ids[:4].tolist() == [0, 1, 2, 3]


def test_the_cache_computes_only_what_it_has_not_seen_for_that_episode() -> None:
    cache = TargetQCache(4)
    asked: list[list[int]] = []

    def compute_for(ids: torch.Tensor) -> torch.Tensor:
        def compute(rows: torch.Tensor) -> torch.Tensor:
            asked.append(rows.tolist())
            return (ids[rows].float().view(-1, 1, 1, 1).expand(-1, 2, 1, 1) * 10, -ids[rows])
        return compute

    slots, ids = torch.tensor([0, 1]), torch.tensor([7, 8])
    out, neg = cache.get(slots, ids, compute_for(ids))
    assert asked == [[0, 1]] and out[:, 0, 0, 0].tolist() == [70.0, 80.0]
    assert neg.tolist() == [-7, -8]
    slots, ids = torch.tensor([1, 2, 0]), torch.tensor([8, 9, 11])  # slot 0 holds a new episode
    out, neg = cache.get(slots, ids, compute_for(ids))
    assert asked[-1] == [1, 2] and cache.last_hit_rate == 1 / 3
    assert out[:, 1, 0, 0].tolist() == [80.0, 90.0, 110.0] and neg.tolist() == [-8, -9, -11]
    state = cache.state_dict()
    cache.clear()
    cache.get(torch.tensor([1]), torch.tensor([8]), compute_for(torch.tensor([8])))
    assert asked[-1] == [0] and cache.last_hit_rate == 0.0
    restored = TargetQCache(4)
    restored.load_state_dict(state)
    out, neg = restored.get(slots, ids, compute_for(ids))
    assert restored.last_hit_rate == 1.0 and out[:, 0, 0, 0].tolist() == [80.0, 90.0, 110.0]
    assert neg.tolist() == [-8, -9, -11]


def _learner(variant: str = "qmix") -> tuple[Qmix, kaleibench.envs.BatchedTask]:
    env = kaleibench.make("mpe/spread-v0", n_envs=4, seed=0)
    learner = load_variant(variant).build(EnvInfo.of(env, 10**6), seed=0)
    assert isinstance(learner, Qmix)
    for _ in range(9):  # 36 episodes
        learner.buffer.insert(collect(env, learner, 0, explore=True).batch)
    return learner, env


def test_reused_target_values_equal_a_fresh_target_pass() -> None:
    learner, _ = _learner()
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        batch = learner.buffer.sample(learner.cfg.batch_size, gen)
        q_next = torch.rand(batch.batch_size, 25, 3)
        with torch.no_grad():
            q, weights = learner.target_values(batch)
            fresh = learner.unroll(learner.target_agent, batch)
            mixed = learner.target_mixer(q_next, learner.mixer_state(batch)[:, 1:])
            torch.testing.assert_close(q, fresh, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(learner.target_mixer.mix(q_next, weights), mixed,
                                       rtol=1e-6, atol=1e-6)
    assert learner.target_cache is not None and learner.target_cache.last_hit_rate > 0.5


def test_a_target_sync_or_polyak_updates_leave_no_stale_values() -> None:
    learner, _ = _learner()
    gen = torch.Generator().manual_seed(0)
    batch = learner.buffer.sample(learner.cfg.batch_size, gen)
    with torch.no_grad():
        before = [a.clone() for a in learner.target_values(batch)]
        for p in list(learner.agent.parameters()) + list(learner.mixer.parameters()):
            p.add_(0.1)
        learner.sync_targets()
        after = learner.target_values(batch)
        fresh = learner.target_pass(batch)
    # the sync computed every stored episode's values with the new target networks
    assert learner.target_cache is not None and learner.target_cache.last_hit_rate == 1.0
    size = learner.buffer.size
    assert torch.equal(learner.target_cache.ids[:size], learner.buffer.ids[:size])
    for old, new, now in zip(before, after, fresh, strict=True):
        assert not torch.allclose(old, new)
        torch.testing.assert_close(new, now, rtol=1e-6, atol=1e-6)
    soft, _ = _learner("qmix")
    polyak = Qmix(soft.cfg.__class__(**{**soft.cfg.__dict__, "target_tau": 0.01}), soft.info, 0)
    assert polyak.target_cache is None  # the target changes every update: nothing to reuse


def test_the_checkpoint_carries_the_cache_so_a_resume_reads_the_same_values() -> None:
    learner, env = _learner()
    for _ in range(3):
        learner.update(0)
    resumed = load_variant("qmix").build(EnvInfo.of(env, 10**6), seed=1)
    assert isinstance(resumed, Qmix)
    saved = io.BytesIO()  # through bytes, as checkpoint.pt is (no tensor shared with learner)
    torch.save(learner.state_dict(), saved)
    saved.seek(0)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    for _ in range(4):
        a, b = learner.update(0), resumed.update(0)
        assert a == b
    assert a["target_cache_hit_rate"] > 0
    for p, q in zip(learner.params, resumed.params, strict=True):
        assert torch.equal(p, q)


def test_stored_episodes_get_their_target_values_at_once() -> None:
    """train_on computes the new episodes' values as it stores them (one wide pass), so the
    updates that draw them read them; they equal a fresh target pass of each episode."""
    learner, env = _learner()
    assert learner.target_cache is not None
    new = collect(env, learner, 0, True).batch
    cache_ids = learner.target_cache.ids.clone()
    learner.cfg = learner.cfg.__class__(**{**learner.cfg.__dict__, "updates_per_episode": 0})
    learner.train_on(new, 0)  # stores, computes, no update
    slots = (learner.target_cache.ids != cache_ids).nonzero().squeeze(1)
    assert len(slots) == new.batch_size
    assert torch.equal(learner.target_cache.ids[slots], learner.buffer.ids[slots])
    stored = learner.buffer.episodes(slots)
    with torch.no_grad():
        cached = learner.target_values(stored)
        assert learner.target_cache.last_hit_rate == 1.0
        for one in range(new.batch_size):  # each episode alone: another batch composition
            alone = learner.target_pass(stored.select(torch.tensor([one])))
            for c, a in zip(cached, alone, strict=True):
                torch.testing.assert_close(c[one:one + 1], a, rtol=1e-6, atol=1e-6)


def test_the_c_store_copies_exactly_what_index_put_would() -> None:
    """The cache's C copy of episodes into their slots (time-major views included) gives the
    store torch's ``store[slots] = values`` gives; a slot out of range writes nothing."""
    from kaleibench.algos import target_cache
    if native.load_declared(target_cache.SOURCE, target_cache.SIGNATURES) is None:
        pytest.skip("no C compiler")
    gen = torch.Generator().manual_seed(3)
    q_time_major = torch.randn(26, 4, 3, 5, generator=gen)  # (T+1, B, N, A), as the pass gives
    weights = torch.randn(4, 25, 7, generator=gen)
    slots = torch.tensor([9, 0, 5, 2])
    for values in (q_time_major.transpose(0, 1), weights):
        ours = torch.zeros(10, *values.shape[1:])
        theirs = ours.clone()
        assert target_cache._scatter(ours, slots, values)
        theirs[slots] = values
        assert torch.equal(ours, theirs)
    before = ours.clone()
    with pytest.raises(IndexError, match="outside"):
        target_cache._scatter(ours, torch.tensor([1, 10, 2, 3]), weights)
    assert torch.equal(ours, before)
    assert not target_cache._scatter(ours.double(), slots, weights.double())  # torch's job
