"""Honest progress: cost-weighted ETAs, status counts, and Ctrl-C with a process pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kaleibench.cli import main
from kaleibench.harness.cost import CellProgress, CostModel, grid_eta, relative_cost
from kaleibench.utils import io


def test_eta_weights_cells_by_their_variant_speed() -> None:
    # qmix runs at half its prior speed on this machine: alma is estimated at half its prior too
    cells = [CellProgress("qmix", "completed", 1000, 1000, rate=680.0),
             CellProgress("qmix", "pending", 0, 1000),
             CellProgress("alma-alloc+lr=0.001", "pending", 0, 1000)]
    eta, model = grid_eta(cells, workers=1)
    assert model.rate("alma-alloc+lr=0.001") == pytest.approx(44.0)
    assert eta == pytest.approx(1000 / 680 + 1000 / 44)
    # a step-counting ETA would say ~2.9 s: the weighted one is ~8x longer
    assert eta > 8 * (2000 / 680)
    # two workers share the work, but a cell is never split
    assert grid_eta(cells, workers=2)[0] == pytest.approx(1000 / 44)
    assert CostModel().rate("unknown-variant") > 0
    assert relative_cost("alma-alloc") > 10 and relative_cost("qmix") == 1.0


def test_list_shows_a_cost_per_variant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    (alma,) = [line for line in capsys.readouterr().out.splitlines() if "alma-alloc " in line]
    assert "x qmix per env step" in alma


def test_status_counts_pending_cells_and_gives_an_eta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text("name: tiny\nt_max: 100\nn_envs: 2\neval_interval: 100\neval_episodes: 2\n"
                     "seeds: [0, 1]\ntasks:\n  - id: mpe/spread-v0\nvariants: [qmix]\n")
    out = tmp_path / "runs"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--workers", "1",
                 "--no-progress", "--seeds", "0"]) == 0
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pending     qmix/mpe__spread-v0/seed_1" in text
    assert "2 cells: completed 1, pending 1" in text
    assert "ETA " in text and "qmix" in text.splitlines()[-1]


SLOW = """
name: slow
t_max: 1000000
n_envs: 2
eval_interval: 1000000
eval_episodes: 2
checkpoint_interval: 1000000
seeds: [0, 1, 2, 3]
tasks:
  - id: mpe/spread-v0
variants: [qmix]
"""


def test_ctrl_c_with_workers_stops_dispatching_and_checkpoints(tmp_path: Path) -> None:
    suite = tmp_path / "slow.yaml"
    suite.write_text(SLOW)
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kaleibench.cli", "run", "--suite", str(suite), "--out", str(out),
         "--workers", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    runs = [out / "qmix" / "mpe__spread-v0" / f"seed_{k}" for k in range(4)]
    deadline = time.time() + 180
    try:
        while time.time() < deadline:  # two cells train
            states = [_t_env(r) for r in runs]
            if sum(1 for t in states if t > 0) >= 2:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            raise AssertionError("the cells did not start")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
        sent = time.time()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (stdout, stderr)
    assert time.time() - sent < 60
    assert "stopping…" in stderr.decode()
    text = stdout.decode()
    assert "interrupted 2" in text and "pending 2" in text, text
    started = [r for r in runs if (r / "status.json").exists()]
    assert len(started) == 2  # the queued cells never started
    for run in started:
        assert io.read_json(run / "status.json")["state"] == "interrupted"
        assert (run / "checkpoint.pt").exists()


def _t_env(run: Path) -> int:
    try:
        return int(io.read_json(run / "status.json").get("t_env", 0))
    except (OSError, ValueError):
        return 0
