"""ALMA-alloc and ALMA+MINE: masking, proposal log-probabilities, critic argmax, meta-batch,
MINE loss and gradients, updates, state round trip and an end-to-end run."""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import torch

from kaleibench.algos import load_variant
from kaleibench.algos.alma import Alma
from kaleibench.algos.alma_config import AlmaConfig, AlmaMineConfig
from kaleibench.algos.alma_mine import AlmaMine
from kaleibench.algos.base import EnvInfo
from kaleibench.envs import make
from kaleibench.losses_alma import alloc_td_targets, fenchel_dual_loss, make_meta_batch
from kaleibench.nn.allocation import AllocPolicy
from kaleibench.nn.attention import EntityAgent, subtask_allowed
from kaleibench.nn.mine import Mine
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


def test_critic_argmax_picks_best_proposal() -> None:
    env = make("mpe/spread-v0", n_envs=3, seed=0, backend="numpy")
    algo = Alma(AlmaConfig(**{**TINY, "n_proposals": 16}), EnvInfo.of(env), 0)
    algo.critic = _CountCritic()  # type: ignore[assignment]
    ts = env.reset(seeds=[0, 1, 2])
    from kaleibench.algos.alma import _tensors

    ent = _tensors(ts.info)
    state = algo.act_gen.get_state()
    alloc = algo.allocate(ent, torch.zeros(3, 3, 3), t_env=0, explore=False)
    algo.act_gen.set_state(state)
    props = algo.policy(ent["entities"], ent["entity_mask"], ent["entity2task"],
                        ent["task_mask"], torch.zeros(3, 3, 3), 16, algo.act_gen).allocs
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
    assert {"alloc_mi_loss", "mi_estimate"} <= set(stats)


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
            assert {"alloc_mi_loss", "mi_estimate"} <= set(stats)


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
    yaml.write_text("algo: kaleibench.algos.alma_mine:AlmaMine\nconfig:\n"
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
