"""C kernels compiled on first use: cache, failures, the opt-out, and the fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kaleibench.nn import native_gru, products
from kaleibench.nn.fused_gru import gru_sequence_fused
from kaleibench.utils import native
from kaleibench.utils.fingerprint import numerics_fingerprint

needs_cc = pytest.mark.skipif(native.compiler() is None, reason="no C compiler on this machine")


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Each test builds into its own cache folder and starts with nothing loaded."""
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(native.DISABLE_ENV, raising=False)
    native.load.cache_clear()
    yield
    native.load.cache_clear()


def _gru() -> tuple[nn.GRU, torch.Tensor]:
    torch.manual_seed(0)
    return nn.GRU(3, 4), torch.randn(5, 2, 3)


@needs_cc
def test_kernels_are_built_once_and_then_reused(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert native_gru.available()
    built = list((tmp_path / "cache" / "native").glob("gru_kernels-*.so"))
    assert len(built) == 1
    assert not list(built[0].parent.glob("*.tmp"))  # written under a temporary name, renamed
    native.load.cache_clear()

    def no_compiler(*_: object) -> None:
        raise AssertionError("compiled again although the cached library matches")

    monkeypatch.setattr(native, "_compile", no_compiler)
    assert native_gru.available()


@needs_cc
def test_a_cached_library_that_does_not_load_is_built_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert native_gru.available()
    native.load.cache_clear()
    compiled, loads = [], []
    real_compile, real_cdll = native._compile, native.ctypes.CDLL

    def counting_compile(*args: object) -> None:
        compiled.append(args)
        real_compile(*args)  # type: ignore[arg-type]

    def damaged_once(path: str) -> object:  # the first load finds a damaged file
        loads.append(path)
        if len(loads) == 1:
            raise OSError(f"{path}: invalid ELF header")
        return real_cdll(path)

    monkeypatch.setattr(native, "_compile", counting_compile)
    monkeypatch.setattr(native.ctypes, "CDLL", damaged_once)
    assert native_gru.available()
    assert len(compiled) == 1 and len(loads) == 2


def test_without_a_compiler_the_fallback_runs_and_says_why(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-kaleibench")
    rnn, x = _gru()
    expected, _ = rnn(x)
    with caplog.at_level("WARNING"):
        out = gru_sequence_fused(rnn, x)
    assert not native_gru.available()
    assert "no C compiler" in (native.unavailable_reason("gru_kernels.c") or "")
    assert "torch implementation" in caplog.text
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@needs_cc
def test_a_failing_build_falls_back_with_the_compiler_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.c"
    broken.write_text("int f(void) { return undefined_symbol_kaleibench; }\n")
    assert native.load(str(broken)) is None
    reason = native.unavailable_reason("broken.c") or ""
    assert "undefined_symbol_kaleibench" in reason
    assert not list((tmp_path / "cache" / "native").glob("broken-*"))  # nothing half-written


def test_the_opt_out_forces_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    assert not native_gru.available()
    assert native.unavailable_reason("gru_kernels.c") == f"{native.DISABLE_ENV}=0"


def test_the_build_key_covers_the_local_headers_a_source_includes(tmp_path: Path) -> None:
    (tmp_path / "k.c").write_text('#include <stdint.h>\n#include "poly.h"\nint f(void);\n')
    (tmp_path / "poly.h").write_text("#define C 1\n")
    before = native.source_text(tmp_path / "k.c")
    (tmp_path / "poly.h").write_text("#define C 2\n")
    assert native.source_text(tmp_path / "k.c") != before
    assert "#define C 2" in native.source_text(tmp_path / "k.c")


def test_the_build_key_changes_with_source_and_compiler() -> None:
    base = native.build_key("int f(void);", "gcc 12.2.0")
    assert base == native.build_key("int f(void);", "gcc 12.2.0")
    assert base != native.build_key("int g(void);", "gcc 12.2.0")
    assert base != native.build_key("int f(void);", "gcc 13.1.0")


@needs_cc
def test_the_fingerprint_tells_runs_with_and_without_the_kernels_apart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with_c = numerics_fingerprint()
    assert "native" not in with_c  # the kernels' results depend only on their source
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    native.load.cache_clear()
    without = numerics_fingerprint()
    assert without["native"] == {"gru_kernels.c": "unavailable", "mix_kernels.c": "unavailable",
                                 "product_kernels.c": "unavailable",
                                 "products": "oneDNN" if products.onednn() else "torch.mm"}
    assert without["hash"] != with_c["hash"]


def test_the_fingerprint_changes_with_the_arithmetic_revision(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kaleibench.utils import fingerprint

    now = numerics_fingerprint()
    assert now["arithmetic"] == fingerprint.ARITHMETIC
    monkeypatch.setattr(fingerprint, "ARITHMETIC", fingerprint.ARITHMETIC + 1)
    assert numerics_fingerprint()["hash"] != now["hash"]
    monkeypatch.setattr(fingerprint, "ARITHMETIC", 1)  # before the field: no such key
    assert "arithmetic" not in numerics_fingerprint()


@needs_cc
def test_the_acting_step_is_the_unroll_step_and_nn_grus() -> None:
    """An agent acts through the learner's step: the same values as the unroll and nn.GRU."""
    from kaleibench.nn.rnn_agent import gru_step

    rnn, x = _gru()
    with torch.no_grad():
        seq = native_gru.gru_sequence_native(x, rnn.weight_ih_l0, rnn.weight_hh_l0,
                                             rnn.bias_ih_l0, rnn.bias_hh_l0)  # (T, M, H)
        h = torch.zeros(2, 4)
        for t in range(x.shape[0]):
            h = gru_step(rnn, x[t], h)
            torch.testing.assert_close(h, seq[t], rtol=1e-6, atol=1e-7)
            _, ref = rnn(x[t][None], seq[t - 1][None] if t else torch.zeros(1, 2, 4))
            torch.testing.assert_close(h, ref[0], rtol=1e-5, atol=1e-6)


@needs_cc
def test_saturated_gates_stay_finite_and_match_nn_gru() -> None:
    """Pre-activations far outside exp's float range (clamped in the kernel) saturate like
    torch's sigmoid and tanh instead of overflowing."""
    rnn, _ = _gru()
    x = torch.tensor([-1e4, -200.0, -90.0, 0.0, 90.0, 200.0, 1e4]).repeat(3, 1).t()[None]
    x = x.expand(4, -1, -1).contiguous()  # (T=4, M=7, I=3)
    out = gru_sequence_fused(rnn, x)
    expected, _ = rnn(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@needs_cc
@pytest.mark.parametrize("bad", ["float64", "w_hh shape", "x rank", "bias"])
def test_arguments_the_kernels_would_misread_are_refused(bad: str) -> None:
    rnn, x = _gru()
    args = {"x": x, "w_ih": rnn.weight_ih_l0, "w_hh": rnn.weight_hh_l0, "b_ih": rnn.bias_ih_l0,
            "b_hh": rnn.bias_hh_l0}
    if bad == "float64":
        args["x"] = x.double()
    elif bad == "w_hh shape":
        args["w_hh"] = torch.zeros(12, 5)
    elif bad == "x rank":
        args["x"] = x[0]
    else:
        args["b_hh"] = torch.zeros(11)
    error = TypeError if bad == "float64" else ValueError
    with pytest.raises(error, match="float32" if bad == "float64" else "expected"):
        native_gru.gru_sequence_native(**args)
