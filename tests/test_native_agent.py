"""The GRU agent's unroll as one node gives the floats of its three nodes in sequence."""

from __future__ import annotations

import pytest
import torch

from kaleibench.nn import native_agent
from kaleibench.nn.dense import dense
from kaleibench.nn.rnn_agent import GruAgent, gru_sequence

pytestmark = pytest.mark.skipif(not native_agent.available(), reason="C kernels unavailable")


def three_nodes(agent: GruAgent, inputs: torch.Tensor) -> torch.Tensor:
    """fc1 (+ReLU), GRU and fc2 as separate nodes: the path without the agent node."""
    x = dense(agent.fc1, inputs.transpose(0, 1), relu=True)
    return dense(agent.fc2, gru_sequence(agent.rnn, x)).transpose(0, 1)


def node_names(t: torch.Tensor) -> str:
    """Names of the autograd nodes behind ``t`` through its views (first inputs only)."""
    names, fn = [], t.grad_fn
    while fn is not None and len(names) < 5:
        names.append(type(fn).__name__)
        fn = fn.next_functions[0][0] if fn.next_functions else None
    return " ".join(names)


@pytest.mark.parametrize("last_step_grad", [True, False])
@pytest.mark.parametrize("shape", [(4, 26, 3, 21, 64, 5), (5, 7, 2, 9, 20, 4)])
def test_agent_node_equals_three_nodes(shape: tuple[int, ...], last_step_grad: bool) -> None:
    """Values and gradients equal (``torch.equal``: an exact zero's sign aside); without a
    gradient on the last step (QMIX: its Q-values only feed the target) the node skips that
    step's backward pass, and still equals the three nodes' full one."""
    b, t, n, i, h, a = shape
    gen = torch.Generator().manual_seed(7)
    agent = GruAgent(i, h, a, n)
    with torch.no_grad():
        for p in agent.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    inputs = torch.randn(t, b, n, i, generator=gen).transpose(0, 1)  # time-major memory
    inputs[:, :, 0, 0] = -50.0  # some fc1 units below zero: both ReLU branches
    grad_q = torch.randn(b, t, n, a, generator=gen)
    if not last_step_grad:
        grad_q[:, -1] = 0.0

    q1 = agent.unroll(inputs)
    assert "GruAgentSequence" in node_names(q1)
    q1.backward(grad_q)
    grads1 = [p.grad.clone() for p in agent.parameters()]  # type: ignore[union-attr]
    agent.zero_grad(set_to_none=True)
    q2 = three_nodes(agent, inputs)
    q2.backward(grad_q)
    grads2 = [p.grad for p in agent.parameters()]
    assert torch.equal(q1, q2)
    for (name, _), g1, g2 in zip(agent.named_parameters(), grads1, grads2, strict=True):
        assert g2 is not None and torch.equal(g1, g2), name
    with torch.no_grad():  # the target network's pass: no node, same values
        assert torch.equal(agent.unroll(inputs), q1)


def test_unroll_parameters_are_the_parameters_in_order() -> None:
    """The C unroll's parameter tuple, read from the layers' dicts, is ``parameters()``."""
    agent = GruAgent(7, 8, 3, 2)
    assert all(a is b for a, b in zip(agent.unroll_parameters(), agent.parameters(),
                                      strict=True))
