"""Small things a user meets at the command line: version, pipes, typos, bad folders, plugins."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from tiny_suite import write_tiny_suite

import kaleibench.algos as algos
from kaleibench.cli import main
from kaleibench.registry import Registry


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ux")
    write_tiny_suite(tmp)
    out = tmp / "runs"
    assert main(["run", "--suite", str(tmp / "tiny.yaml"), "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 0
    return out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"kaleibench {metadata.version('kaleibench')}"


def test_list_into_a_closed_pipe_has_no_traceback() -> None:
    """``kaleibench list | head``: the reader is gone before the output is written."""
    proc = subprocess.Popen([sys.executable, "-m", "kaleibench.cli", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_list_shows_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "QMIX, EPyMARL defaults with a GRU agent" in out


def test_report_baseline_typo_exit_2(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(results), "--baseline", "randm", "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean: `random`" in err


def test_report_on_a_folder_without_runs_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path), "--no-figures"]) == 2
    assert "no runs found" in capsys.readouterr().err


def test_report_unwritable_out_exit_2(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["report", str(results), "--out", str(blocker / "report"), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and "Traceback" not in err


def test_broken_plugin_entry_point_warns_and_the_cli_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = metadata.EntryPoint(name="broken-variant", value="no_such_plugin_mod:VARIANT",
                                 group="kaleibench.variants")
    good = metadata.EntryPoint(name="plugin-ok", value="kaleibench.paths:__name__",
                               group="kaleibench.variants")
    monkeypatch.setattr(algos.metadata, "entry_points", lambda group: [broken, good])
    fresh: Registry[object] = Registry("variant")
    fresh.add_loader(algos._load_builtin)  # type: ignore[arg-type]
    fresh.add_loader(algos._load_plugins)  # type: ignore[arg-type]
    monkeypatch.setattr(algos, "variants", fresh)
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert "broken-variant = no_such_plugin_mod:VARIANT" in captured.err
    assert "qmix" in captured.out and "Traceback" not in captured.err
    assert "plugin-ok" in captured.out  # registered, but its YAML cannot be read: shown so
    assert algos.load_variant("qmix").name == "qmix"


def test_pettingzoo_view_renders_rgb_frames() -> None:
    from kaleibench.envs.pz_view import parallel_env

    view = parallel_env("mpe/spread-v0", render_mode="rgb_array")
    plain = parallel_env("mpe/spread-v0")
    assert "rgb_array" in view.metadata["render_modes"] and view.render_mode == "rgb_array"
    obs, _ = view.reset(seed=7)
    ref, _ = plain.reset(seed=7)
    frame = view.render()
    assert frame is not None and frame.dtype == np.uint8 and frame.ndim == 3
    assert frame.shape[2] == 3 and frame.std() > 0
    for _ in range(5):
        actions = {a: 1 for a in view.agents}
        obs, rew, *_ = view.step(actions)
        ref, ref_rew, *_ = plain.step(actions)
        assert rew == ref_rew and all(np.array_equal(obs[a], ref[a]) for a in obs)
    assert not np.array_equal(view.render(), frame)
    assert plain.render() is None
    with pytest.raises(ValueError, match="render_mode"):
        parallel_env("mpe/spread-v0", render_mode="human")
    view.close()
    plain.close()
