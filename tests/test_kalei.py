"""Known-answer and property tests for the Kaleidoscope layer, 1R3 agent, losses and resets."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor

from kaleibench.nn.kalei_agent import Rnn1R3Agent, sparsity_stats
from kaleibench.nn.kalei_linear import KaleiLinear, StepTanhSTE, make_linear
from kaleibench.nn.kalei_losses import (
    AdaptiveCoefficient,
    dead_connections,
    mask_diversity_loss,
    reset_dead_connections,
    should_reset,
)

BIG = 20.0  # σ(+20) ≈ 1 prunes any |W| < 1; σ(−20) ≈ 2e-9 keeps every nonzero weight


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def set_layer(
    layer: KaleiLinear,
    weight: list[list[float]],
    thresholds: Tensor,
    bias: list[float] | None = None,
) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.sparse_thresholds.copy_(thresholds)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# --- KaleiLinear ---------------------------------------------------------------------------------


@pytest.fixture
def hand_layer() -> KaleiLinear:
    """W = [[0.5, −0.2], [0.05, −1.0]], b = [0.5, −0.5]; σ(s_0) = 0.1 and σ(s_1) = 0.3."""
    layer = KaleiLinear(2, 2, n_masks=2, generator=gen())
    s = torch.stack([torch.full((2, 2), logit(0.1)), torch.full((2, 2), logit(0.3))])
    set_layer(layer, [[0.5, -0.2], [0.05, -1.0]], s, bias=[0.5, -0.5])
    return layer


def test_soft_threshold_known_values(hand_layer: KaleiLinear) -> None:
    # sign(W)·relu(|W| − t): t = 0.1 and t = 0.3, by hand
    expected = torch.tensor([[[0.4, -0.1], [0.0, -0.9]], [[0.2, 0.0], [0.0, -0.7]]])
    torch.testing.assert_close(hand_layer.masked_weights(), expected, atol=1e-6, rtol=0)
    masks = torch.tensor([[[1.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    assert torch.equal(hand_layer.binary_masks(), masks)


def test_forward_known_values(hand_layer: KaleiLinear) -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (B=1, N=2, I=2)
    # agent 0: [0.4 − 0.2, −1.8] + b = [0.7, −2.3]; agent 1: [0.6, −2.8] + b = [1.1, −3.3]
    expected = torch.tensor([[[0.7, -2.3], [1.1, -3.3]]])
    torch.testing.assert_close(hand_layer(x), expected, atol=1e-6, rtol=0)


def test_forward_matches_per_agent_linear_and_extra_leading_dims() -> None:
    layer = KaleiLinear(
        5, 3, n_masks=4, threshold_init_scale=0.0, threshold_init_bias=2.0, generator=gen(1)
    )
    x = torch.randn((2, 7, 4, 5), generator=gen(2))  # (B, T, N, I)
    y = layer(x)
    assert y.shape == (2, 7, 4, 3)
    w = layer.masked_weights()
    for k in range(4):
        ref = torch.nn.functional.linear(x[:, :, k], w[k], layer.bias)
        torch.testing.assert_close(y[:, :, k], ref)
    with pytest.raises(ValueError):
        layer(torch.zeros(2, 3, 5))  # wrong N


def test_threshold_init_range_and_determinism() -> None:
    a = KaleiLinear(
        6, 4, n_masks=3, threshold_init_scale=5.0, threshold_init_bias=5.0, generator=gen(3)
    )
    b = KaleiLinear(6, 4, n_masks=3, generator=gen(3))
    s = a.sparse_thresholds
    assert s.shape == (3, 4, 6)
    assert bool((s <= -5.0).all()) and bool((s >= -10.0).all())
    assert not torch.equal(s[0], s[1])  # masks are drawn independently
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert float(a.weight.detach().abs().max()) <= 1 / math.sqrt(6)


def test_library_code_does_not_touch_global_rng() -> None:
    state = torch.get_rng_state()
    agent = Rnn1R3Agent(7, 8, 5, 3, generator=gen())
    Rnn1R3Agent(7, 8, 5, 3, masked=False, generator=gen())
    make_linear(3, 2)
    for layer in agent.reset_layers:
        reset_dead_connections(layer, generator=gen())
    assert torch.equal(torch.get_rng_state(), state)


# --- straight-through estimator ------------------------------------------------------------------


def test_ste_forward_is_step_and_backward_is_tanh_of_grad() -> None:
    x = torch.tensor([-1.0, 0.0, 1e-6, 2.0], requires_grad=True)
    y = StepTanhSTE.apply(x)
    assert torch.equal(y, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    (y * 3.0).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.full((4,), math.tanh(3.0)))
    x.grad = None
    upstream = torch.tensor([3.0, -0.5, 0.0, 10.0])
    StepTanhSTE.apply(x).backward(upstream)
    torch.testing.assert_close(x.grad, torch.tanh(upstream))


def test_binary_masks_gradient_reaches_thresholds_only(hand_layer: KaleiLinear) -> None:
    hand_layer.binary_masks().sum().backward()
    assert hand_layer.weight.grad is None
    s = hand_layer.sparse_thresholds
    # ∂/∂s of STE(|W| − σ(s)) with upstream 1: tanh(1)·(−σ'(s))
    expected = math.tanh(1.0) * -(torch.sigmoid(s) * (1 - torch.sigmoid(s))).detach()
    torch.testing.assert_close(s.grad, expected)


# --- diversity loss ------------------------------------------------------------------------------


def two_agent_two_layer_example() -> list[KaleiLinear]:
    """Layer A: W = [[0.5, −0.2]]; agent 1 prunes the 0.5.  Layer B: W = [[0.9], [−0.4]]; agent 0
    prunes the 0.9.  m_A = ([0.5, 0.2], [0, 0.2]); m_B = ([0, 0.4], [0.9, 0.4])."""
    layer_a = KaleiLinear(2, 1, n_masks=2, generator=gen())
    s_a = torch.tensor([[[-BIG, -BIG]], [[BIG, -BIG]]])
    set_layer(layer_a, [[0.5, -0.2]], s_a)
    layer_b = KaleiLinear(1, 2, n_masks=2, generator=gen())
    s_b = torch.tensor([[[BIG], [-BIG]], [[-BIG], [-BIG]]])
    set_layer(layer_b, [[0.9], [-0.4]], s_b)
    return [layer_a, layer_b]


def test_diversity_loss_hand_computed() -> None:
    layers = two_agent_two_layer_example()
    # J = 1·(0.5 + 0.5) + 2·(0.9 + 0.9) = 4.6 ; n(n−1) = 2 ; P = 1·2 + 2·1 = 4
    # loss = −4.6 / 2 / 4 = −0.575
    loss = mask_diversity_loss(layers, layer_weights=(1.0, 2.0))
    assert loss.item() == pytest.approx(-0.575, abs=1e-6)
    with pytest.raises(ValueError):
        mask_diversity_loss(layers, layer_weights=(1.0, 2.0, 4.0))


def test_diversity_loss_matches_naive_double_loop() -> None:
    agent = Rnn1R3Agent(6, 8, 4, 3, generator=gen(5))
    with torch.no_grad():  # spread thresholds so that masks differ a lot
        for layer in agent.mask_layers:
            layer.sparse_thresholds.copy_(
                torch.randn(layer.sparse_thresholds.shape, generator=gen(6)) - 2.0
            )
    naive = torch.zeros(())
    n_params = 0
    for layer, lam in zip(agent.mask_layers, (1.0, 2.0, 4.0, 8.0), strict=True):
        m = layer.binary_masks() * layer.weight.detach().abs()
        for i in range(3):
            for j in range(3):
                naive = naive + lam * (m[i] - m[j]).abs().sum()
        n_params += layer.weight.numel()
    expected = -naive / 6 / n_params
    torch.testing.assert_close(mask_diversity_loss(agent.mask_layers), expected)


def test_diversity_gradient_reaches_thresholds_not_weights() -> None:
    agent = Rnn1R3Agent(6, 8, 4, 3, generator=gen(7))
    with torch.no_grad():
        for layer in agent.mask_layers:
            layer.sparse_thresholds.sub_(-4.0)  # σ(s) ~ 0.05-0.3: masks differ between agents
    mask_diversity_loss(agent.mask_layers).backward()
    for layer in agent.mask_layers:
        assert layer.weight.grad is None and layer.bias.grad is None
        assert layer.sparse_thresholds.grad is not None
        assert float(layer.sparse_thresholds.grad.abs().sum()) > 0


# --- adaptive coefficient ------------------------------------------------------------------------


def test_adaptive_coefficient_known_values() -> None:
    coef = AdaptiveCoefficient(div_coef=0.5, maxlen=3)
    assert coef.update(1.0, -0.1) == pytest.approx(5.0)  # |0.5 · 1 / −0.1|
    assert coef.update(2.0, -0.3) == pytest.approx(3.75)  # |0.5 · 1.5 / −0.2|
    assert coef.update(3.0, -0.2) == pytest.approx(5.0)  # |0.5 · 2 / −0.2|
    # the first entries fall out: td = [2, 3, 6], div = [−0.3, −0.2, −0.4]
    assert coef.update(6.0, -0.4) == pytest.approx(0.5 * (11 / 3) / 0.3)
    assert AdaptiveCoefficient(div_coef=0.5).update(1.0, 0.0) == 0.5


def test_adaptive_coefficient_from_given_deques_and_checkpoint() -> None:
    coef = AdaptiveCoefficient()
    coef.load_state_dict(
        {"div_coef": 0.25, "maxlen": 4, "td_hist": [1.0, 3.0], "div_hist": [-0.5, 0.1]}
    )
    assert coef.value() == pytest.approx(0.25 * 2.0 / 0.2)  # means 2.0 and −0.2
    state = json.loads(json.dumps(coef.state_dict()))
    restored = AdaptiveCoefficient()
    restored.load_state_dict(state)
    assert restored.state_dict() == coef.state_dict()
    for _ in range(5):
        restored.update(1.0, -1.0)
    assert len(restored.td_hist) == 4


# --- resets --------------------------------------------------------------------------------------


def layer_with_dead_connections() -> tuple[KaleiLinear, Tensor, Tensor]:
    """(4, 6) layer, 3 masks: 6 connections pruned in all masks, 4 pruned in mask 0 only."""
    layer = KaleiLinear(6, 4, n_masks=3, generator=gen(11))
    all_dead = torch.zeros(4, 6, dtype=torch.bool)
    all_dead[0, :3] = all_dead[2, 4:] = all_dead[3, 0] = True
    one_dead = torch.zeros(4, 6, dtype=torch.bool)
    one_dead[1, :4] = True
    s = torch.full((3, 4, 6), -BIG)
    s[:, all_dead] = BIG
    s[0, one_dead] = BIG
    with torch.no_grad():
        layer.sparse_thresholds.copy_(s)
    return layer, all_dead, one_dead


def test_reset_only_touches_connections_dead_in_every_mask() -> None:
    layer, all_dead, one_dead = layer_with_dead_connections()
    assert torch.equal(dead_connections(layer), all_dead)
    w0, s0, b0 = (p.detach().clone() for p in (layer.weight, layer.sparse_thresholds, layer.bias))
    n_reset = reset_dead_connections(layer, reset_ratio=1.0, generator=gen(12))
    assert n_reset == int(all_dead.sum()) == 6
    keep = ~all_dead
    assert torch.equal(layer.weight[keep], w0[keep])  # bit-identical
    assert torch.equal(layer.sparse_thresholds[:, keep], s0[:, keep])
    assert torch.equal(layer.bias, b0)
    new_s = layer.sparse_thresholds[:, all_dead]
    assert bool((new_s <= -5.0).all() and (new_s >= -10.0).all())
    assert not torch.equal(new_s[0], new_s[1])  # fresh draw per mask
    assert bool((layer.weight[all_dead] != w0[all_dead]).all())
    assert float(layer.weight[all_dead].detach().abs().max()) <= 1 / math.sqrt(6)
    assert not bool(dead_connections(layer).any())  # recycled connections are alive again


def test_reset_ratio_zero_and_partial() -> None:
    layer, all_dead, _ = layer_with_dead_connections()
    before = [p.detach().clone() for p in layer.parameters()]
    assert reset_dead_connections(layer, reset_ratio=0.0, generator=gen(13)) == 0
    for p, q in zip(layer.parameters(), before, strict=True):
        assert torch.equal(p, q)
    n_reset = reset_dead_connections(layer, reset_ratio=0.5, generator=gen(14))
    changed = layer.weight != before[0]  # (O, I)
    assert 0 < n_reset < 6 and int(changed.sum()) == n_reset
    assert not bool((changed & ~all_dead).any())
    s_changed = (layer.sparse_thresholds != before[2]).all(dim=0)  # (O, I)
    assert torch.equal(s_changed, changed)


def test_agent_reset_layers_exclude_fc1() -> None:
    agent = Rnn1R3Agent(6, 8, 4, 3, generator=gen())
    assert agent.reset_layers == (agent.fc2, agent.fc3, agent.fc4)
    assert agent.mask_layers == (agent.fc1, agent.fc2, agent.fc3, agent.fc4)


def test_should_reset_schedule_and_never_in_last_interval() -> None:
    assert should_reset(200_001, 0, 200_000, 3_000_000)
    assert not should_reset(200_000, 0, 200_000, 3_000_000)  # strict inequality
    assert should_reset(2_799_999, 2_000_000, 200_000, 3_000_000)
    assert not should_reset(2_800_000, 0, 200_000, 3_000_000)  # last interval
    t_max, interval, last, resets = 1_000_000, 200_000, 0, []
    for t_env in range(0, t_max + 1, 25):
        if should_reset(t_env, last, interval, t_max):
            resets.append(t_env)
            last = t_env
    assert resets == [200_025, 400_050, 600_075]
    assert all(t_max - t > interval for t in resets)


# --- agent ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [True, False])
def test_agent_shapes(masked: bool) -> None:
    agent = Rnn1R3Agent(7, 16, 5, 3, masked=masked, generator=gen())
    h = agent.init_hidden(4)
    assert h.shape == (4, 3, 16) and not bool(h.any())
    q, h2 = agent(torch.randn((4, 3, 7), generator=gen(1)), h)
    assert q.shape == (4, 3, 5) and h2.shape == (4, 3, 16)
    n_thresholds = 4 if masked else 0
    assert len(agent.threshold_parameters()) == n_thresholds
    assert len(agent.mask_layers) == n_thresholds
    with pytest.raises(ValueError):
        agent(torch.zeros(4, 2, 7), torch.zeros(4, 2, 16))


@pytest.mark.parametrize("layer_name", ["fc1", "fc2", "fc3", "fc4"])
def test_agent_i_uses_mask_i(layer_name: str) -> None:
    agent = Rnn1R3Agent(7, 16, 5, 3, generator=gen(2))
    x = torch.randn((4, 3, 7), generator=gen(3))
    h = torch.randn((4, 3, 16), generator=gen(4))
    q0, h0 = agent(x, h)
    thresholds = getattr(agent, layer_name).sparse_thresholds
    original = thresholds.detach().clone()
    for k in range(3):
        with torch.no_grad():
            thresholds.copy_(original)
            thresholds[k].fill_(BIG)  # prune agent k's mask in this layer
        q1, h1 = agent(x, h)
        for i in range(3):
            if i != k:
                assert torch.equal(q1[:, i], q0[:, i])
                assert torch.equal(h1[:, i], h0[:, i])
        assert not torch.allclose(q1[:, k], q0[:, k])


def test_thresholds_get_gradients_from_td_like_loss() -> None:
    agent = Rnn1R3Agent(7, 16, 5, 3, generator=gen(5))
    q, _ = agent(torch.randn((8, 3, 7), generator=gen(6)), agent.init_hidden(8))
    target = torch.randn((8, 3, 5), generator=gen(7))
    ((q - target) ** 2).mean().backward()
    for s in agent.threshold_parameters():
        assert s.grad is not None and float(s.grad.abs().sum()) > 0


def test_masks_differ_after_a_few_adam_updates_from_identical_masks() -> None:
    # all masks start identical (σ(s) = σ(−3) ≈ 0.047 everywhere): only training separates them
    agent = Rnn1R3Agent(
        7, 16, 5, 3, threshold_init_scale=0.0, threshold_init_bias=3.0, generator=gen(8)
    )
    assert sparsity_stats(agent)["mask_distance"] == 0.0
    x = torch.randn((16, 3, 7), generator=gen(9))
    target = torch.randn((16, 3, 5), generator=gen(10))
    opt = torch.optim.Adam(agent.parameters(), lr=0.05)
    coef = AdaptiveCoefficient(div_coef=0.5)
    for _ in range(10):
        q, _ = agent(x, agent.init_hidden(16))
        td = ((q - target) ** 2).mean()
        div = mask_diversity_loss(agent.mask_layers)
        loss = td + coef.update(td.item(), div.item()) * div
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sparsity_stats(agent)["mask_distance"] > 0.0
    assert mask_diversity_loss(agent.mask_layers).item() < 0.0


def test_sparsity_stats_known_values() -> None:
    agent = Rnn1R3Agent(4, 8, 3, 2, generator=gen(11))
    with torch.no_grad():
        for layer in agent.mask_layers:
            layer.sparse_thresholds.fill_(-BIG)  # dense
        agent.mask_layers[0].sparse_thresholds.fill_(BIG)  # fc1 pruned for both agents
        agent.mask_layers[3].sparse_thresholds[0].fill_(BIG)  # fc4 pruned for agent 0 only
    stats = sparsity_stats(agent)
    sizes = {"fc1": 8 * 4, "fc2": 8 * 8, "fc3": 8 * 8, "fc4": 3 * 8}
    total = sum(sizes.values())
    assert stats["sparsity/fc1"] == 1.0
    assert stats["sparsity/fc2"] == stats["sparsity/fc3"] == 0.0
    assert stats["sparsity/fc4"] == 0.5
    assert stats["sparsity/masked_layers"] == pytest.approx((2 * 32 + 24) / (2 * total))
    n_params = sum(p.numel() for name, p in agent.named_parameters()
                   if "sparse_thresholds" not in name)  # weights, biases, GRU: one agent's net
    assert n_params > total
    assert stats["sparsity/all_params"] == pytest.approx((2 * 32 + 24) / (2 * n_params))
    assert stats["mask_distance"] == pytest.approx(24 / total)
    with pytest.raises(ValueError):
        sparsity_stats(Rnn1R3Agent(4, 8, 3, 2, masked=False, generator=gen()))


def test_forward_never_builds_per_sample_weights() -> None:
    batch, n, size = 512, 4, 32
    layer = KaleiLinear(size, size, n_masks=n, generator=gen())
    x = torch.randn((batch, n, size), generator=gen(1), requires_grad=True)
    largest: list[int] = []

    def pack(t: Tensor) -> Tensor:
        largest.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    y.sum().backward()
    # a W[agent_ids] gather would save a (B·N, O, I) tensor: 512·4·32·32 = 2M entries
    assert max(largest) <= max(batch * n * size, n * size * size)


def _kalei_learner(**overrides: object) -> tuple[object, object]:
    import kaleibench
    from kaleibench.algos.base import EnvInfo
    from kaleibench.algos.kalei_qmix import KaleiQmix, KaleiQmixConfig

    env = kaleibench.make("mpe/spread-v0", n_envs=4, seed=0)
    cfg = KaleiQmixConfig(batch_size=4, buffer_size=16, **overrides)  # type: ignore[arg-type]
    return KaleiQmix(cfg, EnvInfo.of(env, t_max=10_000), seed=0), env


def test_threshold_init_config_reaches_the_agent() -> None:
    """s = −(U(0,1)·scale + bias): the config's scale and bias set the range."""
    learner, _ = _kalei_learner(threshold_init_scale=1.0, threshold_init_bias=0.0)
    s = torch.cat([t.flatten() for t in learner.agent.threshold_parameters()])
    assert s.min() >= -1.0 and s.max() <= 0.0
    default, _ = _kalei_learner()
    s = torch.cat([t.flatten() for t in default.agent.threshold_parameters()])
    assert s.min() >= -10.0 and s.max() <= -5.0


def test_reset_count_survives_into_the_train_metrics() -> None:
    """A reset fires in the first of B updates; the train_on result still counts it."""
    from kaleibench.train.rollout import collect

    learner, env = _kalei_learner(reset_interval=100)
    learner.train_on(collect(env, learner, 0, True).batch, t_env=0)  # warm-up: buffer filled
    with torch.no_grad():  # make every fc2 connection dead in every mask
        learner.agent.reset_layers[0].sparse_thresholds.fill_(50.0)
    stats = learner.train_on(collect(env, learner, 0, True).batch, t_env=150)
    assert stats["n_reset"] > 0
    assert learner.n_updates == 8  # 4 updates per collect of 4 rows, over two collects
