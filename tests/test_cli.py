"""End to end through the CLI: a tiny suite on a process pool, report, reference, check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaleibench.cli import main

TINY = """
name: tiny
version: 1
t_max: 300
n_envs: 4
eval_interval: 300
eval_episodes: 4
seeds: [0, 1]
tasks:
  - id: mpe/spread-v0
    bounds: {random: -79.61, reference: -30.89}
variants: [qmix, kalei-qmix, random]
"""


def test_suite_run_report_reference_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    out = tmp_path / "runs"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--workers", "2",
                 "--no-progress"]) == 0
    assert "6 cells" in capsys.readouterr().out
    # a second invocation skips everything
    assert main(["run", "--suite", str(suite), "--out", str(out), "--workers", "2",
                 "--no-progress"]) == 0
    assert "skipped 6" in capsys.readouterr().out
    assert main(["report", str(out), "--baseline", "qmix", "--reps", "200"]) == 0
    report = (out / "report" / "report.md").read_text()
    assert "n = 2 seeds" in report and (out / "report" / "figures" / "poi.png").exists()
    ref = tmp_path / "ref.json"
    assert main(["reference", "--suite", str(suite), "--results", str(out), "--out",
                 str(ref)]) == 0
    assert main(["check", "--suite", str(suite), "--reference", str(ref), "--results",
                 str(out)]) == 0
    final = out / "qmix" / "mpe__spread-v0" / "seed_1" / "final.json"
    data = json.loads(final.read_text())
    data["final_return"] -= 50.0
    final.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["check", "--suite", str(suite), "--reference", str(ref), "--results",
                 str(out)]) == 1
    text = capsys.readouterr().out
    assert "qmix" in text and "mpe/spread-v0" in text
    assert main(["export", str(out)]) == 0
    assert (out / "marl_eval.json").exists()


def test_report_refuses_incomplete_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY.replace("seeds: [0, 1]", "seeds: [0]"))
    out = tmp_path / "runs"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--workers", "1",
                 "--no-progress", "--variants", "random"]) == 0
    (out / "random" / "mpe__spread-v0" / "seed_0" / "final.json").unlink()
    capsys.readouterr()
    assert main(["report", str(out), "--reps", "200", "--no-figures"]) == 1
    assert "random" in capsys.readouterr().err
