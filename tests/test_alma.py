"""ALMA-alloc and ALMA+MINE: masking, proposal log-probabilities, critic argmax, meta-batch,
MINE loss and gradients, updates, state round trip and an end-to-end run."""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kaleibench.algos import load_variant
from kaleibench.algos.alma import Alma, AlmaConfig, AlmaMine, AlmaMineConfig
from kaleibench.algos.alma.learner import entity_tensors
from kaleibench.algos.base import EnvInfo
from kaleibench.envs import make
from kaleibench.losses import alloc_td_targets, fenchel_dual_loss, make_meta_batch
from kaleibench.nn.allocation import AllocPolicy
from kaleibench.nn.attention import EntityAgent, subtask_allowed
from kaleibench.nn.mine import Mine
from kaleibench.train.buffer import EpisodeBatch
from kaleibench.train.rollout import collect

TINY = dict(embed_dim=16, n_heads=2, hidden_dim=16, mixing_embed_dim=8, hypernet_embed=16,
            batch_size=4, alloc_batch_size=4, n_proposals=4, buffer_size=50)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_entity_cannot_attend_outside_its_subtask() -> None:
    torch.manual_seed(0)  # test-only weights
    agent = EntityAgent(n_features=5, n_actions=4, embed_dim=16, hidden_dim=8, n_heads=2)
    n, e, k = 2, 5, 2
    ent = torch.randn(1, e, 5)
    e2t = torch.zeros(1, e, k)
    e2t[0, 0, 0] = e2t[0, 2, 0] = e2t[0, 4, 0] = 1  # agent 0, entities 2 and 4 in task 0
    e2t[0, 1, 1] = e2t[0, 3, 1] = e2t[0, 4, 1] = 1  # agent 1, entity 3 in task 1 (4 in both)
    allowed = subtask_allowed(torch.ones(1, e, e, dtype=torch.bool),
                              torch.ones(1, e, dtype=torch.bool), e2t)
    last = torch.zeros(1, n, 4)
    q = agent(ent, last, allowed)
    moved = ent.clone()
    moved[0, 3] += 5.0  # an entity of task 1 only
    q2 = agent(moved, last, allowed)
    torch.testing.assert_close(q[0, 0], q2[0, 0])
    assert not torch.allclose(q[0, 1], q2[0, 1])


def _policy_inputs(b: int = 2, n: int = 2, k: int = 3) -> tuple[torch.Tensor, ...]:
    e = n + k
    ent = torch.randn(b, e, 6, generator=_gen(1))
    emask = torch.ones(b, e, dtype=torch.bool)
    e2t = torch.zeros(b, e, k)
    e2t[:, n:] = torch.eye(k)
    return ent, emask, e2t, torch.ones(b, k, dtype=torch.bool), torch.zeros(b, n, k)


def test_proposal_log_prob_is_sum_of_per_agent_log_softmax() -> None:
    policy = AllocPolicy(6, 3, dim=8, n_heads=2)
    ent, emask, e2t, tmask, last = _policy_inputs()
    out = policy(ent, emask, e2t, tmask, last, 5, _gen(3))
    # manual recomputation with the same task permutation (same generator state)
    agent_x, task_x, cnt = policy.encode(ent, emask, e2t, last, _gen(3))
    for b, p in itertools.product(range(2), range(5)):
        tasks, ag_cnt, total = task_x[b].clone(), torch.zeros(3), torch.tensor(0.0)
        for i in range(2):
            c = policy.count_embed(torch.stack([cnt[b], ag_cnt], -1))
            logits = (tasks + c) @ agent_x[b, i] / 8**0.5
            choice = int(out.allocs[b, p, i].argmax())
            total = total + torch.log_softmax(logits, -1)[choice]
            hard = torch.nn.functional.one_hot(torch.tensor(choice), 3).float()
            ag_cnt = ag_cnt + 0.2 * hard
            upd = policy.embed_update(torch.relu(torch.cat([tasks, agent_x[b, i].expand(3, -1)],
                                                           -1)))
            tasks = tasks + upd * hard[:, None]
        torch.testing.assert_close(out.log_pi[b, p], total, rtol=1e-5, atol=1e-5)
    # scoring every allocation in given-mode gives a proper distribution
    every = torch.stack([torch.nn.functional.one_hot(torch.tensor(c), 3).float()
                         for c in itertools.product(range(3), repeat=2)])  # (9, 2, 3)
    given = every[None].expand(2, -1, -1, -1)
    scored = policy(ent, emask, e2t, tmask, last, 9, _gen(3), given=given)
    torch.testing.assert_close(scored.log_pi.exp().sum(1), torch.ones(2))


class _CountCritic(torch.nn.Module):
    """Scores a proposal by how many agents it puts on task 0."""

    def forward(self, ent: torch.Tensor, emask: torch.Tensor, e2t: torch.Tensor,
                allocs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return allocs[..., 0].sum(-1)  # (B, P)

    def score(self, ent: torch.Tensor, emask: torch.Tensor, e2t: torch.Tensor,
              allocs: torch.Tensor, rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return allocs[..., 0].sum(-1)  # (R,)


def test_critic_argmax_picks_best_proposal() -> None:
    env = make("mpe/spread-v0", n_envs=3, seed=0, backend="numpy")
    algo = Alma(AlmaConfig(**{**TINY, "n_proposals": 16}), EnvInfo.of(env), 0)
    algo.high.critic = _CountCritic()  # type: ignore[assignment]
    ts = env.reset(seeds=[0, 1, 2])
    ent = entity_tensors(ts.info)
    state = algo.eval_gen.get_state()
    alloc = algo.allocate(ent, torch.zeros(3, 3, 3), t_env=0, explore=False)
    algo.eval_gen.set_state(state)
    props = algo.policy(ent["entities"], ent["entity_mask"], ent["entity2task"],
                        ent["task_mask"], torch.zeros(3, 3, 3), 16, algo.eval_gen).allocs
    best = props[..., 0].sum(-1).max(1).values  # (B,)
    torch.testing.assert_close(alloc[..., 0].sum(-1), best)


def test_meta_batch_on_two_episodes() -> None:
    reward = torch.tensor([[1.0, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, 9]])
    terminated = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0]], dtype=torch.bool)
    truncated = torch.tensor([[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    filled = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    decision = torch.tensor([[1, 0, 0, 1, 0, 0]] * 2, dtype=torch.bool)
    meta = make_meta_batch(reward, terminated, truncated, filled, decision, action_length=3)
    assert meta.episode.tolist() == [0, 0, 1, 1] and meta.t.tolist() == [0, 3, 0, 3]
    torch.testing.assert_close(meta.reward, torch.tensor([2.0, 5.0, 1.0, 2 / 3]))
    assert meta.terminated.tolist() == [0, 0, 0, 1]
    assert meta.mask.tolist() == [1, 0, 1, 1]  # timeout inside row 1; row 3 terminal
    y = alloc_td_targets(meta.reward, meta.terminated, torch.tensor([10.0, 20, 30, 40]), 0.5)
    torch.testing.assert_close(y, torch.tensor([12.0, 20.0, 21.0]))


def test_jsd_fenchel_dual_loss_known_answer() -> None:
    local = torch.tensor([[1.0, 0], [0, 1], [1, 1]])
    glob = torch.tensor([[1.0, 0], [0, 1], [0, 0]])
    loss, mi = fenchel_dual_loss(local, glob)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    l2 = math.log(2)
    # u = g lᵀ = [[1,0,1],[0,1,1],[0,0,0]]
    pos = [l2 - sp(-1), l2 - sp(-1), l2 - sp(0)]
    neg = [((sp(0) - l2) + (sp(1) - l2)) / 2, ((sp(0) - l2) + (sp(1) - l2)) / 2, 0.0]
    torch.testing.assert_close(mi, torch.tensor(pos))
    torch.testing.assert_close(loss, torch.tensor([n - p for n, p in zip(neg, pos, strict=True)]))


def test_mine_separates_dependent_from_independent() -> None:
    gen = _gen(4)
    torch.manual_seed(0)  # test-only weights

    def fit(dependent: bool) -> float:
        mine = Mine(4, 4, 32)
        opt = torch.optim.Adam(mine.parameters(), lr=1e-2)
        for _ in range(150):
            x = torch.randn(64, 4, generator=gen)
            y = x + 0.1 * torch.randn(64, 4, generator=gen) if dependent else torch.randn(
                64, 4, generator=gen)
            loss, _ = mine(x, y)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
        x = torch.randn(256, 4, generator=gen)
        y = x + 0.1 * torch.randn(256, 4, generator=gen) if dependent else torch.randn(
            256, 4, generator=gen)
        return float(-mine(x, y)[0].mean().detach())

    assert fit(True) > fit(False) + 0.2


def _tiny_batch(algo: Alma | AlmaMine, t_env: int = 100):
    env = make("mpe/spread-v0", n_envs=4, seed=0, backend="numpy")
    return collect(env, algo, t_env, explore=True, seeds=[0, 1, 2, 3]).batch


def _params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def test_mi_term_gives_policy_gradient() -> None:
    env = make("mpe/spread-v0", n_envs=4, seed=0, backend="numpy")
    algo = AlmaMine(AlmaMineConfig(**TINY), EnvInfo.of(env), 0)
    algo.train_on(_tiny_batch(algo), 100)
    ent, emask, e2t, tmask, _ = _policy_inputs(b=6, n=3, k=3)
    ent = torch.randn(6, 6, 10, generator=_gen(2))
    out = algo.alma.policy(ent, emask, e2t, tmask, torch.zeros(6, 3, 3), 4, _gen(0))
    loss, stats = algo.mine.alloc_loss(out, tmask, emask[:, :3], torch.ones(6))
    assert isinstance(loss, torch.Tensor) and loss.requires_grad
    algo.alma.policy.zero_grad()
    loss.backward()
    grad = algo.alma.policy.fc1.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    assert {"alloc/mi_loss", "alloc/mi_estimate", "alloc/mi_pos"} <= set(stats)


def test_updates_are_finite_and_change_parameters() -> None:
    env = make("mpe/spread-v0", n_envs=4, seed=0, backend="numpy")
    for algo in (Alma(AlmaConfig(**TINY), EnvInfo.of(env), 0),
                 AlmaMine(AlmaMineConfig(**TINY), EnvInfo.of(env), 0)):
        inner = algo.alma if isinstance(algo, AlmaMine) else algo
        before = {k: _params(getattr(inner, k)) for k in ("agent", "mixer", "policy", "critic")}
        stats = algo.train_on(_tiny_batch(algo), 100)
        assert stats and all(np.isfinite(v) for v in stats.values())
        assert {"alloc/entropy", "alloc/agents_per_task", "alloc/best_prob",
                "alloc/critic_loss", "alloc/amort_loss", "loss_td"} <= set(stats)
        for k, p in before.items():
            assert not torch.equal(p, _params(getattr(inner, k))), k
        if isinstance(algo, AlmaMine):
            assert {"alloc/mi_loss", "alloc/mi_estimate", "alloc/mi_pos"} <= set(stats)


def test_state_dict_round_trip_is_bit_identical() -> None:
    env = make("mpe/spread-v0", n_envs=4, seed=0, backend="numpy")
    a = AlmaMine(AlmaMineConfig(**TINY), EnvInfo.of(env), 0)
    a.train_on(_tiny_batch(a), 100)
    b = AlmaMine(AlmaMineConfig(**TINY), EnvInfo.of(env), 1)
    blob = io.BytesIO()
    torch.save(a.state_dict(), blob)  # as the loop's checkpoint: safe loader, no shared tensors
    blob.seek(0)
    b.load_state_dict(torch.load(blob, weights_only=True))
    batch = _tiny_batch(a, 200)
    assert a.train_on(batch, 200) == b.train_on(batch, 200)


def test_end_to_end_run_writes_final_json(tmp_path: Path) -> None:
    from kaleibench.train.loop import train
    from kaleibench.train.spec import RunSpec

    yaml = tmp_path / "alma-tiny.yaml"
    yaml.write_text("algo: kaleibench.algos.alma:AlmaMine\nconfig:\n"
                    + "".join(f"  {k}: {v}\n" for k, v in TINY.items()))
    spec = RunSpec(suite="test", variant=load_variant(str(yaml)), task="mpe/spread-v0", seed=0,
                   t_max=400, n_envs=4, eval_interval=200, eval_episodes=4, log_interval=100,
                   backend="numpy")
    final = train(spec, tmp_path / "runs", progress=False)
    assert np.isfinite(final["final_return"])
    run_dir = spec.run_dir(tmp_path / "runs")
    assert json.loads((run_dir / "final.json").read_text())["t_env"] == 400
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("alloc/entropy" in r for r in rows if r["kind"] == "train")


def test_meta_batch_time_limit_terminal_vs_bootstrapped() -> None:
    reward = torch.tensor([[1.0, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, 1]])
    terminated = torch.zeros(2, 6, dtype=torch.bool)
    truncated = torch.zeros(2, 6, dtype=torch.bool)
    truncated[:, 5] = True  # both episodes hit the time limit at their last step
    filled = torch.ones(2, 6, dtype=torch.bool)
    decision = torch.tensor([[1, 0, 0, 1, 0, 0]] * 2, dtype=torch.bool)
    q_next = torch.tensor([10.0, 20, 30, 40])
    # the limit is part of the task: the last segment is a real terminal one, trained, no bootstrap
    meta = make_meta_batch(reward, terminated, truncated, filled, decision, 3,
                           timeout_is_terminal=True)
    assert meta.terminated.tolist() == [0, 1, 0, 1] and meta.mask.tolist() == [1, 1, 1, 1]
    y = alloc_td_targets(meta.reward, meta.terminated, q_next, 0.5)
    torch.testing.assert_close(y, torch.tensor([2.0 + 0.5 * 20, 5.0, 1.0 + 0.5 * 40]))
    # an artificial limit: the segment with the truncation is masked (today's behaviour)
    meta = make_meta_batch(reward, terminated, truncated, filled, decision, 3,
                           timeout_is_terminal=False)
    assert meta.terminated.tolist() == [0, 0, 0, 0] and meta.mask.tolist() == [1, 0, 1, 0]


def test_learner_high_level_follows_resolved_time_limit() -> None:
    env = make("mpe/spread-v0", n_envs=4, seed=0, backend="numpy")
    from dataclasses import replace

    from kaleibench.algos.alma.batch import gather_decisions

    batch = None
    for forced, n_masked in ((None, 0), (False, 4)):  # None: as MPE declares (terminal)
        algo = Alma(replace(AlmaConfig(**TINY), timeout_is_terminal=forced), EnvInfo.of(env), 0)
        assert algo.cfg.timeout_is_terminal is (forced is None)
        batch = batch or _tiny_batch(algo)
        batch.data["t_added"] = torch.full((4,), 100, dtype=torch.long)
        losses = algo.high.losses(batch, 100, torch.Generator().manual_seed(0))
        assert np.isfinite(float(losses.critic_loss.detach()))
        meta = make_meta_batch(batch["reward"], batch["terminated"], batch["truncated"],
                               batch["filled"], batch["hier_decision"][:, :-1], 5,
                               bool(algo.cfg.timeout_is_terminal))
        assert int((meta.mask == 0).sum()) == n_masked  # 4 episodes: their t = 20 segments
        assert len(gather_decisions(batch, meta)["alloc"]) == 20


def test_amortisation_loss_uses_meta_batch_mask() -> None:
    log_pi = torch.tensor([-1.0, -2.0, -100.0])
    entropy = torch.zeros(3, 4)
    from kaleibench.losses import amortisation_loss

    amort, _ = amortisation_loss(log_pi, entropy, torch.tensor([1.0, 1.0, 0.0]), 0.01)
    assert float(amort) == pytest.approx(1.5)  # the masked row (−100) does not count


def test_greedy_evaluation_does_not_change_training() -> None:
    env = make("mpe/spread-v0", n_envs=2, seed=0, backend="numpy")
    runs = []
    for n_evals in (0, 2):
        algo = Alma(AlmaConfig(**TINY), EnvInfo.of(env), 0)
        collect(env, algo, 100, explore=True, seeds=[0, 1])
        for k in range(n_evals):
            collect(env, algo, 100, explore=False, seeds=[10 + k, 20 + k])
        runs.append(collect(env, algo, 100, explore=True, seeds=[2, 3]).batch)
    assert torch.equal(runs[0]["actions"], runs[1]["actions"])
    assert torch.equal(runs[0]["alloc"], runs[1]["alloc"])


def test_shared_q_learning_fields_match_qmix() -> None:
    import dataclasses

    from kaleibench.algos.alma import QLearningConfig
    from kaleibench.algos.qmix import QmixConfig

    qmix = {f.name: f.default for f in dataclasses.fields(QmixConfig)}
    for f in dataclasses.fields(QLearningConfig):
        assert f.name in qmix and qmix[f.name] == f.default, f.name
    shared = {f.name for f in dataclasses.fields(QLearningConfig)}
    assert shared <= {f.name for f in dataclasses.fields(AlmaConfig)}


def test_low_level_epsilon_anneal_is_a_fraction_of_the_budget() -> None:
    env = make("mpe/spread-v0", n_envs=2, seed=0, backend="numpy")
    for t_max in (200_000, 2_050_000):
        algo = Alma(AlmaConfig(**TINY), EnvInfo.of(env, t_max), 0)
        assert algo.epsilon(t_max // 4) == pytest.approx(0.05)
        assert algo.epsilon(t_max // 8) == pytest.approx(0.525)
    fixed = Alma(AlmaConfig(**TINY, epsilon_anneal_time=1000), EnvInfo.of(env, 10**6), 0)
    assert fixed.epsilon(1000) == pytest.approx(0.05)


def test_attention_mixer_is_per_subtask_and_monotone() -> None:
    from kaleibench.nn.mixers import AttentionSubtaskMixer

    torch.manual_seed(0)  # test-only weights
    mixer = AttentionSubtaskMixer(in_dim=5, embed_dim=8, hypernet_embed=16, n_heads=2)
    n, e, k = 3, 5, 2
    ent = torch.randn(4, e, 5)
    e2t = torch.zeros(4, e, k)
    e2t[:, [0, 1, 3], 0] = 1  # agents 0, 1 and entity 3 in task 0
    e2t[:, [2, 4], 1] = 1  # agent 2 and entity 4 in task 1
    present = torch.ones(4, e, dtype=torch.bool)
    q = torch.randn(4, n, requires_grad=True)
    out = mixer(q, ent, e2t, present)  # (4, K)
    grads = torch.stack([torch.autograd.grad(out[:, j].sum(), q, retain_graph=True)[0]
                         for j in range(k)], 1)  # (4, K, N)
    assert (grads >= 0).all()
    assert (grads[:, 0, 2] == 0).all() and (grads[:, 1, :2] == 0).all()
    assert (grads[:, 0, :2] > 0).all() and (grads[:, 1, 2] > 0).all()
    moved = ent.clone()
    moved[:, 4] += 3.0  # an entity of task 1 only: task 0's Q_tot must not move
    out2 = mixer(q, moved, e2t, present)
    torch.testing.assert_close(out2[:, 0], out[:, 0])
    assert not torch.allclose(out2[:, 1], out[:, 1])


def test_mine_network_trains_unweighted_and_encoder_gets_weighted_gradient() -> None:
    env = make("mpe/spread-v0", n_envs=4, seed=0, backend="numpy")
    grads = {}
    for w in (1e-3, 1.0):
        algo = AlmaMine(AlmaMineConfig(**{**TINY, "mi_weight": w}), EnvInfo.of(env), 0)
        ent, emask, e2t, tmask, _ = _policy_inputs(b=6, n=3, k=3)
        ent = torch.randn(6, 6, 10, generator=_gen(2))
        out = algo.alma.policy(ent, emask, e2t, tmask, torch.zeros(6, 3, 3), 4, _gen(0))
        loss, _ = algo.mine.alloc_loss(out, tmask, emask[:, :3], torch.ones(6))
        algo.alma.policy.zero_grad()
        algo.mine.zero_grad()
        loss.backward()
        grads[w] = (algo.alma.policy.fc1.weight.grad.clone(),
                    algo.mine.mine.l1.weight.grad.clone())
    torch.testing.assert_close(grads[1e-3][1], grads[1.0][1])  # statistics net: unweighted
    torch.testing.assert_close(grads[1e-3][0], 1e-3 * grads[1.0][0])  # encoder: scaled



def test_alma_mine_trajectory_differs_from_alma_alloc() -> None:
    env = make("mpe/spread-v0", n_envs=4, seed=0, backend="numpy")
    plain = Alma(AlmaConfig(**TINY), EnvInfo.of(env), 0)
    mine = AlmaMine(AlmaMineConfig(**TINY), EnvInfo.of(env), 0)  # default mi_weight
    start = _params(plain.policy)
    assert torch.equal(start, _params(mine.alma.policy))  # same initialisation
    batch = _tiny_batch(plain)
    for algo in (plain, mine):
        algo.train_on(EpisodeBatch(dict(batch.data)), 100)
        algo.train_on(EpisodeBatch(dict(batch.data)), 100)
    moved = _params(plain.policy) - start
    gap = _params(mine.alma.policy) - _params(plain.policy)
    assert float(gap.norm()) > 0.1 * float(moved.norm())


def test_subtask_coverage_counts_active_subtasks_with_an_agent() -> None:
    from kaleibench.algos.alma.batch import random_allocs, subtask_coverage

    eye = torch.eye(3)
    alloc = torch.stack([eye[[0, 0, 1]], eye[[2, 1, 0]]])  # (2, N=3, K=3)
    active = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    # row 0 covers 2 of 3; row 1 covers both active subtasks (subtask 2 is inactive)
    assert float(subtask_coverage(alloc, active)) == pytest.approx(4 / 5)
    many = torch.ones(20_000, 3, dtype=torch.bool)
    rand = random_allocs(many, 3, torch.Generator().manual_seed(0))
    assert float(subtask_coverage(rand, many)) == pytest.approx(1 - (2 / 3) ** 3, abs=0.01)
