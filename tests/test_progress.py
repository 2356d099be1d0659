"""Honest progress: cost-weighted ETAs, status counts, and Ctrl-C with a process pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kaleibench.algos import load_variant, variants
from kaleibench.cli import main
from kaleibench.envs import tasks
from kaleibench.harness.cost import (
    CellProgress,
    CostModel,
    format_eta,
    grid_eta,
    prior,
    prior_table,
    read_cell,
    relative_cost,
    suite_cells,
    suite_estimate,
)
from kaleibench.harness.suite import load_suite
from kaleibench.utils import io


def test_eta_weights_cells_by_their_variant_speed() -> None:
    # qmix runs at half its prior speed on this machine: alma is estimated at half its prior too
    spread = "mpe/spread-v0"
    qmix, alma = prior("qmix", spread), prior("alma-alloc", spread)
    assert qmix is not None and alma is not None
    cells = [CellProgress("qmix", "completed", 1000, 1000, rate=qmix / 2, task=spread),
             CellProgress("qmix", "pending", 0, 1000, task=spread),
             CellProgress("alma-alloc+lr=0.001", "pending", 0, 1000, task=spread)]
    eta, model = grid_eta(cells, workers=1)
    assert model.rate("alma-alloc+lr=0.001", spread) == pytest.approx(alma / 2)
    assert eta == pytest.approx(1000 / (qmix / 2) + 1000 / (alma / 2))
    # a step-counting ETA would say 2000 steps at qmix's rate: the weighted one is far longer
    assert eta > 4 * (2000 / (qmix / 2))
    # two workers share the work, but a cell is never split
    assert grid_eta(cells, workers=2)[0] == pytest.approx(1000 / (alma / 2))
    assert CostModel().rate("unknown-variant") > 0
    assert relative_cost("alma-alloc") > 4 and relative_cost("qmix") == 1.0


def test_eta_weights_cells_by_their_task() -> None:
    # six agents cost more per env step than three: the priors say so, and the ETA follows
    n3, n6 = prior("qmix", "mpe/spread-v0"), prior("qmix", "mpe/spread-n6-v0")
    assert n3 is not None and n6 is not None and n6 < 0.8 * n3
    model = CostModel()
    model.observe("qmix", n3 / 3, "mpe/spread-v0")  # this machine: 3x slower than the table
    assert model.rate("qmix", "mpe/spread-n6-v0") == pytest.approx(n6 / 3)
    assert model.is_measured("qmix", "mpe/spread-v0")
    assert not model.is_measured("qmix", "mpe/spread-n6-v0")
    # a task the table does not know: the variant's measured rate elsewhere stands in
    assert model.rate("qmix", "mpe/not-in-the-table-v0") == pytest.approx(n3 / 3)


def test_the_cost_table_covers_every_built_in_cell() -> None:
    table = prior_table()
    for name in variants.names():
        variant = load_variant(name)
        if not variant.learns:
            continue
        for task in tasks.names():
            if variant.needs_subtasks and not tasks.get(task).has_subtasks:
                continue
            assert table.get(name, {}).get(task, 0) > 0, (name, task)


def test_suite_estimate_spreads_cells_over_cores_without_splitting_one() -> None:
    rate = prior("qmix", "mpe/spread-v0")
    assert rate is not None
    cells = [("qmix", "mpe/spread-v0", int(rate * 10))] * 3
    assert suite_estimate(cells, workers=2) == pytest.approx(15.0, rel=1e-3)
    assert suite_estimate(cells[:1], workers=2) == pytest.approx(10.0, rel=1e-3)
    assert suite_estimate([("no-such-variant", "mpe/spread-v0", 100)]) is None


def test_list_shows_a_cost_per_variant_and_per_suite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    (alma,) = [line for line in out if line.startswith("  alma-alloc ")]
    assert "x qmix per env step" in alma
    (smoke,) = [line for line in out if line.startswith("  smoke ")]
    cells = suite_cells(load_suite("smoke"))
    assert len(cells) == 12 and "12 learning cells" in smoke
    eta = suite_estimate(cells)
    assert eta is not None and f"~{format_eta(eta)}" in smoke
    assert not [line for line in out if "cost unknown" in line or "cannot be loaded" in line]


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



def test_a_running_cell_rate_ignores_the_rows_before_learning_starts(tmp_path: Path) -> None:
    # while the replay buffer fills, env steps run ~10x faster than the rest of the cell: that
    # rate must not stand for the cell, else a grid of just-started cells gets a far short ETA
    spread = "mpe/spread-v0"
    qmix = prior("qmix", spread)
    assert qmix is not None
    run = tmp_path / "qmix" / "mpe__spread-v0" / "seed_0"
    run.mkdir(parents=True)
    io.atomic_write_json(run / "status.json", {"state": "running", "t_env": 200})
    rows = [{"kind": "eval", "t_env": 0, "return_mean": -50.0},
            {"kind": "train", "t_env": 200, "env_steps_per_s": 10 * qmix, "episodes": 8}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cell = read_cell(run, "qmix", 10_000, task=spread)
    assert cell.state == "running" and cell.rate is None
    eta, model = grid_eta([cell], workers=1)
    assert not model.is_measured("qmix", spread)
    assert eta == pytest.approx((10_000 - 200) / qmix)  # the prior, not the warm-up's rate
    # once a row was logged while learning, that row's rate is the cell's
    rows.append({"kind": "train", "t_env": 5200, "env_steps_per_s": qmix / 2, "n_updates": 64})
    rows.append({"kind": "eval", "t_env": 5200, "return_mean": -40.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_cell(run, "qmix", 10_000, task=spread).rate == pytest.approx(qmix / 2)


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


def test_status_names_cells_of_a_variant_file_by_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a suite entry that is a variant file: its cells live in a folder named after the variant
    # (the file's stem here), and pending ones must be listed there, not under the path --
    # also when suite.json lists the file's path, as folders made by older versions do
    variant = tmp_path / "my-qmix.yaml"
    variant.write_text("algo: kaleibench.algos.qmix:Qmix\nconfig: {lr: 0.001}\n")
    suite = tmp_path / "tiny.yaml"
    suite.write_text("name: tiny\nt_max: 100\nn_envs: 2\neval_interval: 100\neval_episodes: 2\n"
                     f"seeds: [0, 1]\ntasks:\n  - id: mpe/spread-v0\nvariants: [{variant}]\n")
    out = tmp_path / "runs"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--workers", "1",
                 "--no-progress", "--seeds", "0"]) == 0
    assert (out / "my-qmix" / "mpe__spread-v0" / "seed_0" / "final.json").exists()
    listed = json.loads((out / "suite.json").read_text())
    for entries in (listed["variants"], [str(variant)]):
        io.atomic_write_json(out / "suite.json", {**listed, "variants": entries})
        capsys.readouterr()
        assert main(["status", str(out)]) == 0
        text = capsys.readouterr().out
        assert "pending     my-qmix/mpe__spread-v0/seed_1" in text
        assert "2 cells: completed 1, pending 1" in text
