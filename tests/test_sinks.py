"""Timing in metrics rows and the optional CSV and Weights & Biases sinks, from the CLI."""

from __future__ import annotations

import csv
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from kaleibench.cli import main
from kaleibench.train.timing import TIMING_KEYS
from kaleibench.utils import io
from kaleibench.utils.sinks import numbers

TINY = """
name: tiny
t_max: 200
n_envs: 2
eval_interval: 100
eval_episodes: 2
log_interval: 50
checkpoint_interval: 100
seeds: [0]
tasks:
  - id: mpe/spread-v0
variants: [qmix]
"""
RUN = "qmix/mpe__spread-v0/seed_0"


def _run(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    out = tmp_path / "runs"
    return main(["run", "--suite", str(suite), "--out", str(out), "--workers", "1",
                 "--no-progress", *extra]), out


def test_rows_carry_time_and_speed_and_the_csv_holds_every_number(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "--csv")
    assert code == 0
    rows = io.read_jsonl(out / RUN / "metrics.jsonl")
    train = [r for r in rows if r["kind"] == "train"]
    assert train and all(set(TIMING_KEYS) <= set(r) for r in train)
    assert all(r["env_steps_per_s"] > 0 and r["cpu_time"] > 0 for r in train)
    walls = [r["wall_time"] for r in rows]
    assert walls == sorted(walls) and walls[0] >= 0
    with open(out / RUN / "metrics.csv", newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == ["kind", "t_env", "metric", "value"]
    expected = [[r["kind"], str(r["t_env"]), k, repr(v)] for r in rows
                for k, v in numbers(r).items()]
    assert sorted(lines[1:]) == sorted(expected) and len(expected) > 20
    assert ["eval", "200", "return_mean", repr(rows[-1]["return_mean"])] in lines


class _FakeRun:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls

    def log(self, values: dict[str, float], step: int) -> None:
        self.calls.append(("log", (step, values)))

    def finish(self) -> None:
        self.calls.append(("finish", None))


def test_wandb_sink_logs_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any]] = []

    def init(**kwargs: Any) -> _FakeRun:
        calls.append(("init", kwargs))
        return _FakeRun(calls)

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    monkeypatch.setenv("WANDB_PROJECT", "kb-test")
    code, out = _run(tmp_path, "--wandb")
    assert code == 0
    spec = io.read_json(out / RUN / "spec.json")
    (kind, init_kwargs), *logs, last = calls
    assert kind == "init" and last == ("finish", None)
    assert init_kwargs["project"] == "kb-test" and init_kwargs["name"] == spec["run_id"]
    assert init_kwargs["config"]["config_hash"] == spec["config_hash"]
    rows = io.read_jsonl(out / RUN / "metrics.jsonl")
    assert [c[1][0] for c in logs] == [r["t_env"] for r in rows]
    final_eval = logs[-1][1][1]
    assert final_eval["eval/return_mean"] == rows[-1]["return_mean"]


def test_wandb_missing_exits_2_with_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    code, out = _run(tmp_path, "--wandb")
    assert code == 2
    assert "pip install 'kaleibench[wandb]'" in capsys.readouterr().err
    assert not (out / RUN).exists()
