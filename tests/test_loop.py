"""Training loop and harness: determinism, resume == uninterrupted, failures, bad input."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from kaleibench.algos import load_variant
from kaleibench.cli import main
from kaleibench.harness.grid import expand
from kaleibench.harness.runner import execute
from kaleibench.harness.suite import load_suite
from kaleibench.train import loop
from kaleibench.train.spec import RunSpec
from kaleibench.train.timing import cumulative_cpu_time, strip_timing
from kaleibench.utils import io


def _spec(variant: str = "qmix", **kw: object) -> RunSpec:
    v = load_variant(variant)
    if v.learns:
        v = replace(v, config=replace(v.config, batch_size=4, buffer_size=64))
    base = dict(suite="t", variant=v, task="mpe/spread-v0", seed=3, t_max=800, n_envs=4,
                eval_interval=400, eval_episodes=4, log_interval=200, checkpoint_interval=200)
    base.update(kw)
    return RunSpec(**base)  # type: ignore[arg-type]


def _rows(run_dir: Path) -> list[dict[str, object]]:
    """The metrics rows without their wall-clock keys (the only machine-dependent ones)."""
    return [strip_timing(r) for r in io.read_jsonl(run_dir / "metrics.jsonl")]


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    spec = _spec()
    a = loop.train(spec, tmp_path / "a", progress=False)
    b = loop.train(spec, tmp_path / "b", progress=False)
    assert _rows(spec.run_dir(tmp_path / "a")) == _rows(spec.run_dir(tmp_path / "b"))
    assert a["final_returns"] == b["final_returns"] and a["absolute_return"] == b["absolute_return"]
    c = loop.train(replace(spec, seed=4), tmp_path / "c", progress=False)
    assert c["final_returns"] != a["final_returns"]


def test_backends_give_identical_runs(tmp_path: Path) -> None:
    """The batched backend is the default; the mpe2 reference backend gives the same numbers."""
    spec = _spec(t_max=400)
    a = loop.train(spec, tmp_path / "numpy", progress=False)
    b = loop.train(replace(spec, backend="mpe2"), tmp_path / "mpe2", progress=False)
    assert a["final_returns"] == b["final_returns"]
    assert a["absolute_returns"] == b["absolute_returns"]


def test_files_and_schema(tmp_path: Path) -> None:
    spec = _spec()
    final = loop.train(spec, tmp_path, progress=False)
    run_dir = spec.run_dir(tmp_path)
    assert {p.name for p in run_dir.iterdir()} >= {
        "spec.json", "status.json", "metrics.jsonl", "final.json", "best.pt", "final.pt"}
    assert not (run_dir / "checkpoint.pt").exists()
    assert io.read_json(run_dir / "status.json")["state"] == "completed"
    evals = [r for r in _rows(run_dir) if r["kind"] == "eval"]
    assert [r["t_env"] for r in evals] == [0, 400, 800]
    assert final["final_returns"] == evals[-1]["returns"]
    assert len(final["absolute_returns"]) == 40  # 10 × eval_episodes
    assert io.read_json(run_dir / "spec.json")["run_id"] == spec.run_id


@pytest.mark.parametrize("variant", ["qmix", "kalei-qmix"])
def test_resume_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     variant: str) -> None:
    spec = _spec(variant)
    reference = loop.train(spec, tmp_path / "ref", progress=False)
    calls = {"n": 0}
    original = loop.Run.train_step

    def crashing(self: loop.Run) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 6:  # after the checkpoint at 400 steps + one more batch
            raise RuntimeError("simulated crash")
        return original(self)

    monkeypatch.setattr(loop.Run, "train_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train(spec, tmp_path / "res", progress=False)
    run_dir = spec.run_dir(tmp_path / "res")
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "final.json").exists()
    monkeypatch.setattr(loop.Run, "train_step", original)
    resumed = loop.train(spec, tmp_path / "res", progress=False)
    assert _rows(run_dir) == _rows(spec.run_dir(tmp_path / "ref"))
    for key in ("final_returns", "absolute_returns", "best_eval_t_env", "t_env"):
        assert resumed[key] == reference[key]
    # CPU time carries over the restart, like wall time: the rows never count from 0 again
    cpu = [r["cpu_time"] for r in io.read_jsonl(run_dir / "metrics.jsonl")]
    assert cpu == sorted(cpu) and resumed["cpu_time_s"] >= cpu[-1] > 0


def test_cpu_time_of_older_rows_is_summed_over_restarts() -> None:
    rows = [{"cpu_time": 1.0}, {"kind": "x"}, {"cpu_time": 3.0}, {"cpu_time": 0.5},
            {"cpu_time": 2.5}, {"cpu_time": 0.25}]
    assert cumulative_cpu_time(rows) == 3.0 + 2.5 + 0.25
    assert cumulative_cpu_time([{"cpu_time": 1.0}, {"cpu_time": 4.0}]) == 4.0
    assert math.isnan(cumulative_cpu_time([{"kind": "eval"}]))


def test_failures_are_isolated_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = [_spec(seed=1, t_max=200), _spec(seed=2, t_max=200)]
    original = loop.Run.train_step

    def maybe_fail(self: loop.Run) -> dict[str, float]:
        if self.spec.seed == 1:
            raise ValueError("boom")
        return original(self)

    monkeypatch.setattr(loop.Run, "train_step", maybe_fail)
    from kaleibench.harness.grid import Cell

    summary = execute([Cell(s) for s in specs], tmp_path, workers=1, progress=False)
    assert summary.counts == {"failed": 1, "completed": 1}
    status = io.read_json(specs[0].run_dir(tmp_path) / "status.json")
    assert status["state"] == "failed" and "boom" in status["error"]
    assert "Traceback" in status["traceback"]
    again = execute([Cell(s) for s in specs], tmp_path, workers=1, progress=False)
    assert again.counts == {"failed": 1, "skipped": 1}  # no retry without --retry-failed


def test_grid_ids_are_stable_and_n_envs_is_identity() -> None:
    suite = load_suite("smoke")
    ids = [c.spec.run_id for c in expand(suite)]
    assert ids == [c.spec.run_id for c in expand(suite)] and len(set(ids)) == len(ids)
    assert len(ids) == len(suite.variants) * len(suite.tasks) * len(suite.seeds)
    spec = expand(suite)[0].spec
    assert replace(spec, n_envs=spec.n_envs + 1).run_id != spec.run_id
    assert replace(spec, checkpoint_interval=7).run_id == spec.run_id


def test_smoke_suite_runs_every_builtin_learning_variant() -> None:
    """The CI grid (and its reference scores) covers every learning variant that ships."""
    from kaleibench.paths import data_dir

    builtin = sorted(p.stem for p in data_dir("baselines").glob("*.yaml"))
    learning = {name for name in builtin if load_variant(name).learns}
    assert {"qmix", "kalei-qmix", "alma-alloc"} <= learning and "random" not in learning
    assert set(load_suite("smoke").variants) == learning


@pytest.mark.parametrize("argv, needle", [
    (["run", "--variant", "qmx", "--task", "mpe/spread-v0"], "Did you mean: `qmix`"),
    (["run", "--variant", "qmix", "--task", "mpe/sprd-v0"], "Did you mean"),
    (["run", "--suite", "smok"], "Did you mean: `smoke`"),
    (["run", "--suite", "smoke", "--t-max", "0"], "--t-max"),
    (["run", "--suite", "smoke", "--seeds", "-1"], "--seeds"),
])
def test_bad_input_exits_2_before_compute(argv: list[str], needle: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_bad_yaml_names_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "v.yaml"
    bad.write_text("algo: kaleibench.algos.qmix:Qmix\nconfig:\n  hiden_dim: 32\n")
    assert main(["run", "--variants", str(bad), "--task", "mpe/spread-v0",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "v.yaml" in err and "hiden_dim" in err and "hidden_dim" in err
    broken = tmp_path / "s.yaml"
    broken.write_text("name: x\ntasks: [\n")
    assert main(["run", "--suite", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "s.yaml" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_cli_single_cell_and_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    rc = main(["run", "--variant", "random", "heuristic", "--task", "mpe/tag-v0", "--seed", "0",
               "--out", str(out), "--no-progress", "--workers", "1"])
    assert rc == 0
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "completed   heuristic/mpe__tag-v0/seed_0" in text
    final = json.loads((out / "heuristic/mpe__tag-v0/seed_0/final.json").read_text())
    assert final["t_env"] == 0 and len(final["absolute_returns"]) == 320


def test_unwritable_output_folder_exits_2(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["run", "--variant", "random", "--task", "mpe/spread-v0",
                 "--out", str(blocker / "runs")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"
