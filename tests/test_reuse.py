"""Re-running into a results folder: say what is reused, refuse what cannot share it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tiny_suite import write_tiny_suite

from kaleibench.cli import main


def _run(suite: Path, out: Path, *extra: str) -> int:
    return main(["run", "--suite", str(suite), "--out", str(out), "--workers", "1",
                 "--no-progress", *extra])


@pytest.fixture
def done(tmp_path: Path) -> tuple[Path, Path]:
    variant = tmp_path / "mine.yaml"
    variant.write_text("algo: kaleibench.algos.qmix:Qmix\nconfig: {hidden_dim: 16}\n")
    suite = write_tiny_suite(tmp_path, f"[{variant}]")
    out = tmp_path / "runs"
    assert _run(suite, out) == 0
    return suite, out


def test_other_backend_is_reported_with_the_way_out(
    done: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    suite, out = done
    capsys.readouterr()
    assert _run(suite, out, "--backend", "mpe2") == 0
    captured = capsys.readouterr()
    assert "skipped 1" in captured.out and "already completed" in captured.out
    assert "ran with --backend numpy; you asked for mpe2" in captured.err
    assert f"--out {out}-mpe2" in captured.err
    assert _run(suite, Path(f"{out}-mpe2"), "--backend", "mpe2") == 0
    assert "completed 1" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed")
def test_sink_asked_for_on_completed_cells_is_reported(
    done: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    suite, out = done
    capsys.readouterr()
    assert _run(suite, out, "--tensorboard") == 0
    err = capsys.readouterr().err
    assert "run without --tensorboard" in err and f"--out {out}-tensorboard" in err


def test_changed_config_or_budget_is_refused_before_anything_is_written(
    done: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite, out = done
    before = (out / "suite.json").read_bytes()
    (tmp_path / "mine.yaml").write_text(
        "algo: kaleibench.algos.qmix:Qmix\nconfig: {hidden_dim: 32}\n")
    capsys.readouterr()
    assert _run(suite, out) == 2
    err = capsys.readouterr().err
    assert "config hidden_dim: 16 in the folder, 32 asked" in err
    assert f"--out {out}-2" in err
    assert (out / "suite.json").read_bytes() == before
    (tmp_path / "mine.yaml").write_text(
        "algo: kaleibench.algos.qmix:Qmix\nconfig: {hidden_dim: 16}\n")
    assert _run(suite, out, "--t-max", "150") == 2
    assert "t_max: 100 in the folder, 150 asked" in capsys.readouterr().err
    assert (out / "suite.json").read_bytes() == before


def test_a_new_variant_joins_the_folder_and_keeps_its_suite_description(
    done: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    suite, out = done
    before = json.loads((out / "suite.json").read_text())
    other = tmp_path / "other.yaml"
    other.write_text("algo: kaleibench.algos.qmix:Qmix\nconfig: {hidden_dim: 8}\n")
    capsys.readouterr()
    assert _run(suite, out, "--variants", str(other), "--t-max", "150") == 2
    err = capsys.readouterr().err
    assert f"{out / 'suite.json'}: `t_max` is 100 there, this run asks for 150" in err
    assert json.loads((out / "suite.json").read_text()) == before
    assert not (out / "other").exists()
    assert _run(suite, out, "--variants", str(other)) == 0
    after = json.loads((out / "suite.json").read_text())
    assert after["variants"] == [*before["variants"], "other"]
    assert {k: v for k, v in after.items() if k != "variants"} == {
        k: v for k, v in before.items() if k != "variants"}
