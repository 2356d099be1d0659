"""Crash safety with real processes: SIGKILL at several points and Ctrl-C, then resume.

A resumed run must equal an uninterrupted one bit for bit (metrics rows and final scores).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kaleibench.cli import main
from kaleibench.harness.status import file_problems
from kaleibench.train.timing import FINAL_TIMING_KEYS, strip_timing
from kaleibench.utils import io

SUITE = """
name: crash
version: 1
t_max: 1600
n_envs: 4
eval_interval: 400
eval_episodes: 4
log_interval: 200
checkpoint_interval: 200
seeds: [0]
tasks:
  - id: mpe/spread-v0
    bounds: {random: -79.61, reference: -30.89}
variants: [kalei-qmix]
"""
RUN = "kalei-qmix/mpe__spread-v0/seed_0"
TIMING = FINAL_TIMING_KEYS


def _cmd(suite: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "kaleibench.cli", "run", "--suite", str(suite), "--out",
            str(out), "--workers", "1", "--no-progress"]


def _wait_for_steps(out: Path, t_env: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if io.read_json(out / RUN / "status.json").get("t_env", 0) >= t_env:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"run did not reach {t_env} steps (exit {proc.poll()})")


def _result(out: Path) -> tuple[list[dict[str, object]], dict[str, object]]:
    final = io.read_json(out / RUN / "final.json")
    return [strip_timing(r) for r in io.read_jsonl(out / RUN / "metrics.jsonl")], {
        k: v for k, v in final.items() if k not in TIMING}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[object, object]]:
    tmp = tmp_path_factory.mktemp("crash")
    suite = tmp / "crash.yaml"
    suite.write_text(SUITE)
    assert main(["run", "--suite", str(suite), "--out", str(tmp / "ref"), "--workers", "1",
                 "--no-progress"]) == 0
    return suite, _result(tmp / "ref")


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [200, 600, 1000])
def test_sigkill_then_resume_is_bit_identical(
    reference: tuple[Path, tuple[object, object]], tmp_path: Path, kill_at: int
) -> None:
    suite, expected = reference
    out = tmp_path / "out"
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    proc = subprocess.Popen(_cmd(suite, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_for_steps(out, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / RUN / "final.json").exists()
    assert io.read_json(out / RUN / "status.json")["state"] == "running"  # dead, looks alive
    assert main(["run", "--suite", str(suite), "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 0
    assert _result(out) == expected


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_resume_is_bit_identical(
    reference: tuple[Path, tuple[object, object]], tmp_path: Path
) -> None:
    suite, expected = reference
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(suite, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / RUN / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)  # the first checkpoint follows the first batch: most training remains
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    status = io.read_json(out / RUN / "status.json")
    assert status["state"] == "interrupted" and (out / RUN / "checkpoint.pt").exists()
    assert main(["run", "--suite", str(suite), "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 0
    assert _result(out) == expected


def test_status_names_corrupt_files(reference: tuple[Path, tuple[object, object]],
                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite, _ = reference
    out = tmp_path / "out"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--workers", "1",
                 "--no-progress", "--t-max", "200"]) == 0
    run_dir = out / RUN
    assert file_problems(run_dir) == []
    with open(run_dir / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"kind": "train", "t_e')  # torn by a crash mid-write
    (run_dir / "final.json").write_text('{"final_return": ')
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "metrics.jsonl: torn last line" in text and "final.json: corrupt JSON" in text
