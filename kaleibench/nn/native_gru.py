"""The GRU over whole sequences with its gate arithmetic in C (``gru_kernels.c``).

Same function as ``torch.nn.GRU`` (one layer, zero initial state, gate layout r, z, n):

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t−1} + b_hr)
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t−1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t−1} + b_hn))
    h_t = n_t + z_t ⊙ (h_{t−1} − n_t)

Work split: each way is one C call (``gru_fwd_seq_in``, ``gru_bwd_seq``). Forward, per step:
the products W_ih x_t and W_hh h_{t−1} (``fma_gemm.h``, a tiled product in registers, each
element a fused multiply-add chain in a fixed order) and the step's element-wise work (the
biases, the gates and h_t). Backward, per step: the gradients of the pre-activations and the
product with W_hh; then the input gradient over all T·M rows
(:func:`~kaleibench.nn.products.matmul`) and the weight and bias gradients, long sums over
those rows (:func:`~kaleibench.nn.products.weight_grad`). Measured on an AMD EPYC (family 26,
AVX-512), CPU time of one update: the 26 forward steps had cost 26 oneDNN calls of ~20 µs (half
of it per-call overhead) plus 26 Python round trips; in the one C call a step costs ~11 µs of
recurrent product and ~6 µs of gates. Computing W_ih x_t step by step instead of as one product
over all steps first (the same floats) saved ~2 % of a forward pass (705 against 719 µs).
Everything is time-major with rows (T, M, ·), the layout the agent network uses, so nothing is
transposed on the way in or out.

Autograd sees one node (:class:`NativeGruSequence`); the backward pass is BPTT:
∂L/∂h_{t−1} = (its output gradient) + z_t ⊙ ∂L/∂h_t + (∂L/∂gh_t) W_hh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kaleibench.nn.products import matmul, transposed, weight_grad
from kaleibench.utils import native

SOURCE = str(Path(__file__).with_name("gru_kernels.c"))

_P, _I64, _INT = native.P, native.I64, native.INT
SIGNATURES: native.Signatures = {
    "gru_fwd_step": ([_P] * 10 + [_I64, _I64, _INT], None),
    "gru_fwd_seq_in": ([_P, _I64, *([_P] * 11), _I64, _I64, _I64, _INT], None),
    "gru_bwd_seq": ([_P] * 9 + [_I64, _I64, _I64], None),
    "gru_agent_fwd": ([_P] * 16 + [_I64] * 5 + [_INT], _INT),
    "gru_agent_bwd": ([_P] * 19 + [_I64] * 5, _INT),
}


def kernels() -> Any | None:
    """The loaded C library with its argument types declared, or None (see
    :func:`kaleibench.utils.native.load`)."""
    return native.load_declared(SOURCE, SIGNATURES)


def available() -> bool:
    """Whether the C kernels can run here."""
    return kernels() is not None


def _forward(lib: Any, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
             save: bool) -> tuple[Tensor, Tensor | None]:
    """x (T, M, I) contiguous -> hs (T+1, M, H) with hs[0] = 0, and when ``save`` the gates
    (4, T, M, H) = [r, z, n, W_hn h + b_hn] of every step.

    One C call (``gru_fwd_seq_in``): per step the products W_ih x_t and W_hh h_{t−1} (the
    former's rows the same floats as one product over all steps) and the gates. The products are
    taken without their biases: the C step adds b_ih and b_hh, which spares copying the bias
    into every output row first."""
    t_len, m, i = x.shape
    h = w_hh.shape[1]
    hs = torch.empty(t_len + 1, m, h)
    hs[0].zero_()
    gates = torch.empty(4, t_len, m, h) if save else None
    b_ih, b_hh = b_ih.detach().contiguous(), b_hh.detach().contiguous()
    w_t, wi_t = transposed(w_hh), transposed(w_ih)  # (H, 3H), (I, 3H)
    work = torch.empty(2, m, 3 * h)  # one step's W_ih x_t and W_hh h_{t-1}
    saved = (None,) * 4 if gates is None else tuple(gates[k].data_ptr() for k in range(4))
    lib.gru_fwd_seq_in(x.data_ptr(), i, wi_t.data_ptr(), work[0].data_ptr(), w_t.data_ptr(),
                       b_ih.data_ptr(), b_hh.data_ptr(), hs.data_ptr(), work[1].data_ptr(),
                       *saved, t_len, m, h, int(save))
    return hs, gates


class NativeGruSequence(torch.autograd.Function):
    """One autograd node: x (T, M, I) -> h_1..h_T (T, M, H), float32."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                b_hh: Tensor) -> Tensor:
        lib = kernels()
        assert lib is not None, "NativeGruSequence needs the C kernels (see native_gru.available)"
        x = x.contiguous()
        hs, gates = _forward(lib, x, w_ih, w_hh, b_ih, b_hh, save=True)
        ctx.save_for_backward(x, w_ih, w_hh, hs, gates)
        return hs[1:]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, w_ih, w_hh, hs, gates = ctx.saved_tensors
        lib = kernels()
        assert lib is not None, "the C kernels were loaded for the forward pass"
        g = grad_out.contiguous().clone()  # bptt overwrites it
        g_ih, g_hh, g_bih, g_bhh, grad_x = bptt(lib, g, x, w_ih, w_hh, hs, gates,
                                                input_grad=ctx.needs_input_grad[0])
        return grad_x, g_ih, g_hh, g_bih, g_bhh


def bptt(lib: Any, g: Tensor, x: Tensor, w_ih: Tensor, w_hh: Tensor, hs: Tensor, gates: Tensor,
         input_grad: bool = True) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None,
                                           Tensor | None]:
    """The GRU's backward pass over the sequence: (∂W_ih, ∂W_hh, ∂b_ih, ∂b_hh, ∂x or None).

    g (T, M, H) or (T·M, H), contiguous, holds ∂L/∂h_t from the outputs and is overwritten
    (it becomes the total ∂L/∂h_t, step by step); x (T, M, I) the input, hs and gates as saved
    by :func:`_forward`. BPTT is one C call (``gru_bwd_seq``); then the input gradient
    ∂L/∂x = Σ ∂gi W_ih and the weight and bias gradients over all T·M rows."""
    t_len, m, i = x.shape
    h = w_hh.shape[1]
    d_gi = torch.empty(t_len, m, 3 * h)  # ∂L/∂(W_ih x_t + b_ih)
    d_gh = torch.empty(t_len, m, 3 * h)  # ∂L/∂(W_hh h_{t−1} + b_hh)
    w = w_hh.detach().contiguous()
    lib.gru_bwd_seq(g.data_ptr(), hs.data_ptr(), *(gates[k].data_ptr() for k in range(4)),
                    d_gi.data_ptr(), d_gh.data_ptr(), w.data_ptr(), t_len, m, h)
    d_gi2, d_gh2 = d_gi.view(t_len * m, 3 * h), d_gh.view(t_len * m, 3 * h)
    grad_x = matmul(d_gi2, w_ih.detach()).view(t_len, m, i) if input_grad else None
    grad_w_ih, grad_b_ih = weight_grad(d_gi2, x.view(t_len * m, i), bias=True)  # Σ ∂gi_tᵀ x_t
    grad_w_hh, grad_b_hh = weight_grad(d_gh2, hs[:-1].reshape(t_len * m, h), bias=True)
    return grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_x


def check_arguments(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> None:
    """Refuse what the C kernels would misread: they see raw float32 memory of these shapes."""
    h3 = w_ih.shape[0]
    if (x.dim() == 3 and w_ih.dim() == 2 and w_hh.dim() == 2 and w_ih.shape[1] == x.shape[2]
            and w_hh.shape == (h3, h3 // 3) and h3 % 3 == 0 and b_ih.shape == (h3,)
            and b_hh.shape == (h3,) and x.dtype == w_ih.dtype == w_hh.dtype == b_ih.dtype
            == b_hh.dtype == torch.float32 and x.device.type == w_ih.device.type == "cpu"
            and w_hh.device.type == b_ih.device.type == b_hh.device.type == "cpu"):
        return  # the common case, checked at once; the messages below name what is wrong
    tensors = {"x": x, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    for name, a in tensors.items():
        if a.dtype != torch.float32 or a.device.type != "cpu":
            raise TypeError(f"the C GRU kernels need float32 CPU tensors; {name} is {a.dtype} "
                            f"on {a.device}")  # fmt: skip
    h = w_hh.shape[-1] if w_hh.dim() == 2 else -1
    expected = {"x": (x.shape[0], x.shape[1], w_ih.shape[-1]) if x.dim() == 3 else None,
                "w_ih": (3 * h, x.shape[-1]), "w_hh": (3 * h, h), "b_ih": (3 * h,),
                "b_hh": (3 * h,)}  # fmt: skip
    for name, shape in expected.items():
        if shape is None or tuple(tensors[name].shape) != shape:
            raise ValueError(f"GRU argument {name} has shape {tuple(tensors[name].shape)}, "
                             f"expected {shape or '(T, M, I)'} (x (T, M, I), W_ih (3H, I), "
                             "W_hh (3H, H), biases (3H,))")  # fmt: skip


def gru_sequence_native(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                        b_hh: Tensor) -> Tensor:
    """h_1..h_T (T, M, H) of x (T, M, I) from a zero state; differentiable when a gradient is
    needed, a plain forward without saved gates otherwise. Raises TypeError/ValueError on
    arguments the kernels cannot take (see :func:`check_arguments`)."""
    check_arguments(x, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(a.requires_grad for a in (x, w_ih, w_hh, b_ih, b_hh)):
        out: Tensor = NativeGruSequence.apply(x, w_ih, w_hh, b_ih, b_hh)
        return out
    lib = kernels()
    assert lib is not None, "gru_sequence_native needs the C kernels"
    with torch.no_grad():
        hs, _ = _forward(lib, x.contiguous(), w_ih, w_hh, b_ih, b_hh, save=False)
    return hs[1:]


def gru_step_native(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                    b_hh: Tensor) -> Tensor:
    """One step without gradient (acting): x (M, I), h (M, H) = h_{t−1} -> h_t (M, H).

    The gate arithmetic of :func:`gru_sequence_native`'s loop (the same C step), in one call
    instead of ``nn.GRU``'s checks and dispatch; only the two products' grouping differs from
    the unroll's (one row block here, all steps at once there). Written out rather than as
    ``_forward`` over one step: that path's set-up (state buffer, views) makes a call ~1.5×
    slower (35 against 22 µs at 24 rows), and this runs at every acting step."""
    lib = kernels()
    assert lib is not None, "gru_step_native needs the C kernels"
    m, hd = h.shape
    gi = torch.mm(x, w_ih.t())  # (M, 3H)
    gh = torch.mm(h, w_hh.t())  # (M, 3H)
    h, b_ih, b_hh = h.contiguous(), b_ih.detach().contiguous(), b_hh.detach().contiguous()
    out = torch.empty(m, hd)
    lib.gru_fwd_step(gi.data_ptr(), gh.data_ptr(), b_ih.data_ptr(), b_hh.data_ptr(),
                     h.data_ptr(), out.data_ptr(), None, None, None, None, m, hd, 0)
    return out
