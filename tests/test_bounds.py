"""Normalisation bounds: one table next to the task specs, shared by suites and single runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaleibench.cli import main
from kaleibench.envs import tasks
from kaleibench.envs.tasks import BOUNDS, task_bounds
from kaleibench.harness.suite import load_suite
from kaleibench.paths import data_dir
from kaleibench.utils import io

SUITES = sorted(data_dir("suites").glob("*.yaml"))


def test_every_task_has_measured_bounds() -> None:
    assert sorted(BOUNDS) == tasks.names()
    assert all(random < reference for random, reference in BOUNDS.values())


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_suite_bounds_equal_the_task_table(path: Path) -> None:
    stated = yaml.safe_load(path.read_text())["tasks"]
    assert stated
    for task in stated:
        if "bounds" in task:  # a suite may omit them; then the table's are used
            bounds = task["bounds"]
            assert (bounds["random"], bounds["reference"]) == task_bounds(task["id"]), task["id"]
    for task in load_suite(str(path)).tasks:
        assert (task.random, task.reference) == task_bounds(task.id)


def test_single_run_uses_the_task_bounds(tmp_path: Path) -> None:
    out = tmp_path / "adhoc"
    assert main(["run", "--variant", "random", "--task", "mpe/adversary-v0", "--out", str(out),
                 "--workers", "1", "--no-progress"]) == 0
    (task,) = io.read_json(out / "suite.json")["tasks"]
    assert task == {"id": "mpe/adversary-v0", "bounds": {"random": -5.77, "reference": 16.84}}


def test_suite_task_without_bounds_takes_the_table(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nt_max: 10\nseeds: [0]\nvariants: [random]\n"
                    "tasks:\n  - id: mpe/tag-v0\n")
    (task,) = load_suite(str(path)).tasks
    assert (task.random, task.reference) == (2.81, 49.5)
