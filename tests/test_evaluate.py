"""Saved policies: `kaleibench evaluate`, replay GIFs and the TensorBoard sink."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from kaleibench.algos import load_variant
from kaleibench.cli import main
from kaleibench.evaluate import evaluate_run
from kaleibench.train import loop
from kaleibench.train.spec import RunSpec
from kaleibench.train.timing import strip_timing
from kaleibench.utils import io
from kaleibench.utils.seeding import eval_seeds

HAS_TB = importlib.util.find_spec("tensorboard") is not None


def _spec(**kw: object) -> RunSpec:
    v = load_variant("qmix")
    v = replace(v, config=replace(v.config, batch_size=4, buffer_size=64))
    base = dict(suite="t", variant=v, task="mpe/spread-v0", seed=1, t_max=400, n_envs=4,
                eval_interval=200, eval_episodes=4, log_interval=100)
    base.update(kw)
    return RunSpec(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A just-trained tiny QMIX run (with the TensorBoard sink when tensorboard is installed)."""
    root = tmp_path_factory.mktemp("runs")
    spec = _spec(tensorboard=HAS_TB)
    final = loop.train(spec, root, progress=False)
    return spec.run_dir(root), final


def test_evaluate_reproduces_recorded_final_and_absolute_returns(
    trained: tuple[Path, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, final = trained
    result = evaluate_run(run_dir, "final")
    assert result.seeds == eval_seeds(4)
    assert result.returns.tolist() == final["final_returns"]  # exactly, same seeds
    assert result.agent_returns.shape == (4, 3)
    np.testing.assert_allclose(result.agent_returns.sum(axis=1), result.returns, rtol=1e-5)
    # the run's "absolute" re-evaluation: 10x episodes on seeds after the 4 it was selected on
    best = evaluate_run(run_dir, "best", seeds=eval_seeds(40, offset=4))
    assert best.returns.tolist() == final["absolute_returns"]
    assert not set(best.seeds) & set(eval_seeds(4))
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    mean, low, high = result.interval()
    assert f"team return: {mean:.4f}  95% t-CI [{low:.4f}, {high:.4f}]" in out
    assert "agent_0" in out and "agent_2" in out


def test_render_writes_one_frame_per_step_plus_first(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    from PIL import Image

    run_dir, final = trained
    gif = tmp_path / "replay.gif"
    assert main(["evaluate", str(run_dir), "--episodes", "1", "--render", str(gif)]) == 0
    with Image.open(gif) as im:
        assert im.n_frames == 25 + 1
        assert im.size == (240, 240)
    assert gif.stat().st_size < 2_000_000
    # Same greedy policy and episode seed as evaluation (mpe2 backend vs numpy: float32 sums).
    from kaleibench.render import render_run

    replay = render_run(run_dir, tmp_path / "again.gif", "final")
    assert replay.team_return == pytest.approx(final["final_returns"][0], rel=1e-5)  # type: ignore[index]
    assert (tmp_path / "again.gif").read_bytes() == gif.read_bytes()


def test_report_replay_shows_the_median_of_the_first_eval_episodes(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    from kaleibench.evaluate import evaluate_run
    from kaleibench.render import render_run

    run_dir, _ = trained
    result = evaluate_run(run_dir, "final", episodes=5)
    order = np.argsort(result.returns, kind="stable")
    median_seed = result.seeds[int(order[2])]
    assert len(set(result.returns.tolist())) > 1  # a real choice among different episodes
    replay = render_run(run_dir, tmp_path / "median.gif", "final", candidates=5)
    assert replay.seed == median_seed
    assert replay.team_return == pytest.approx(float(np.median(result.returns)), rel=1e-5)


def _assert_events_match_jsonl(run_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kaleibench.utils.tensorboard import scalars

    rows = io.read_jsonl(run_dir / "metrics.jsonl")
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for tag, value in scalars(row).items():
            expected.setdefault(tag, []).append((int(row["t_env"]), value))
    assert {"train/loss_td", "train/return_mean", "eval/return_mean"} <= set(expected)
    assert sorted(acc.Tags()["scalars"]) == sorted(expected)
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert got == [(s, float(np.float32(v))) for s, v in points], tag  # TB keeps float32


needs_tb = pytest.mark.skipif(
    not HAS_TB, reason="tensorboard is not installed (pip install 'kaleibench[tensorboard]')")


@needs_tb
def test_tensorboard_events_hold_the_jsonl_values(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    run_dir, _ = trained
    _assert_events_match_jsonl(run_dir)
    # The sink changes neither the run id nor a byte of the JSONL.
    spec = _spec()
    assert spec.run_id == _spec(tensorboard=True).run_id
    loop.train(spec, tmp_path, progress=False)
    assert [strip_timing(r) for r in io.read_jsonl(spec.run_dir(tmp_path) / "metrics.jsonl")] \
        == [strip_timing(r) for r in io.read_jsonl(run_dir / "metrics.jsonl")]
    assert not (spec.run_dir(tmp_path) / "tensorboard").exists()


@needs_tb
def test_tensorboard_after_resume_still_matches_jsonl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tensorboard=True, t_max=800, checkpoint_interval=200)
    calls = {"n": 0}
    original = loop.Run.train_step

    def crashing(self: loop.Run) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 6:  # rows past the last checkpoint are written, then cut on resume
            raise RuntimeError("simulated crash")
        return original(self)

    monkeypatch.setattr(loop.Run, "train_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train(spec, tmp_path, progress=False)
    monkeypatch.setattr(loop.Run, "train_step", original)
    loop.train(spec, tmp_path, progress=False)
    _assert_events_match_jsonl(spec.run_dir(tmp_path))


def test_tensorboard_flag_without_the_package_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # type: ignore[arg-type]
    code = main(["run", "--variant", "qmix", "--task", "mpe/spread-v0", "--t-max", "100",
                 "--out", str(tmp_path / "out"), "--tensorboard", "--no-progress"])
    assert code == 2
    assert "kaleibench[tensorboard]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _corrupt_json(d: Path) -> Path:
    (d / "spec.json").write_text('{"algo": ')
    return d / "spec.json"


def _spec_missing_key(d: Path) -> Path:
    spec = json.loads((d / "spec.json").read_text())
    del spec["config"]
    (d / "spec.json").write_text(json.dumps(spec))
    return d / "spec.json"


def _corrupt_policy(d: Path) -> Path:
    (d / "final.pt").write_bytes(b"not a torch file")
    return d / "final.pt"


def _missing_policy(d: Path) -> Path:
    (d / "final.pt").unlink()
    return d / "final.pt"


def _not_a_policy(d: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, d / "final.pt")
    return d / "final.pt"


def _shape_mismatch(d: Path) -> Path:
    payload = torch.load(d / "final.pt", weights_only=True)
    agent = payload["policy"]["agent"]
    name = next(iter(agent))
    agent[name] = torch.zeros(agent[name].shape[0] + 1, *agent[name].shape[1:])
    torch.save(payload, d / "final.pt")
    return d / "final.pt"


def _other_task(d: Path) -> Path:
    spec = json.loads((d / "spec.json").read_text())
    spec["task"] = "mpe/spread-n6-v0"  # 6 agents: the saved agent net's input size differs
    (d / "spec.json").write_text(json.dumps(spec))
    return d / "final.pt"


@pytest.mark.parametrize("damage", [
    _corrupt_json, _spec_missing_key, _corrupt_policy, _missing_policy, _not_a_policy,
    _shape_mismatch, _other_task,
])
def test_bad_run_folder_is_exit_2_naming_the_file(
    trained: tuple[Path, dict[str, object]], tmp_path: Path, damage: Callable[[Path], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir, _ = trained
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    culprit = damage(d)
    assert main(["evaluate", str(d)]) == 2
    err = capsys.readouterr().err
    assert str(culprit) in err, err


def test_missing_run_folder_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["evaluate", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty)]) == 2
    assert str(empty / "spec.json") in capsys.readouterr().err


def _one_run_results(trained: tuple[Path, dict[str, object]], results: Path) -> Path:
    """A results folder holding the trained run as qmix / spread / seed 1."""
    shutil.copytree(trained[0], results / "qmix" / "mpe__spread-v0" / "seed_1")
    return results


def test_report_embeds_one_replay_per_cell(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    from PIL import Image

    from kaleibench.analysis.report import write_report

    results = _one_run_results(trained, tmp_path / "results")
    text = write_report(results, tmp_path / "report", reps=200).read_text()
    gif = tmp_path / "report" / "replays" / "qmix__mpe__spread-v0.gif"
    assert "### Replays" in text and "](replays/qmix__mpe__spread-v0.gif)" in text
    assert text.index("curves_per_task.png") < text.index("### Replays")
    assert 0 < gif.stat().st_size <= 2_000_000
    with Image.open(gif) as im:
        assert im.n_frames == 26


def test_a_copy_without_policies_reuses_the_replay_of_the_same_policy(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    import json

    from kaleibench.analysis.report import write_report

    full = _one_run_results(trained, tmp_path / "full")
    write_report(full, full / "report", reps=200)
    made = full / "report" / "replays" / "qmix__mpe__spread-v0.gif"
    meta = json.loads(made.with_suffix(".json").read_text())
    assert meta["training_seed"] == 1 and meta["policy"] == "best"

    def kept_copy(name: str) -> Path:  # what `export` commits: no policy files
        copy = tmp_path / name
        shutil.copytree(full, copy, ignore=shutil.ignore_patterns("*.pt"))
        return copy

    copy = kept_copy("copy")  # reported into its default folder, and into another one
    for out in (copy / "report", tmp_path / "elsewhere"):
        text = write_report(copy, out, reps=200).read_text()
        assert "kept from an earlier report: same policy file" in text
        assert "no policy file kept" not in text
        assert f"return {meta['team_return']:.2f}" in text
        assert (out / "replays" / made.name).read_bytes() == made.read_bytes()

    # another policy (its status.json records another checksum) or a damaged GIF: no reuse
    other = kept_copy("other")
    status = other / "qmix" / "mpe__spread-v0" / "seed_1" / "status.json"
    st = json.loads(status.read_text())
    st["sha256"]["best.pt"] = "0" * 64
    status.write_text(json.dumps(st))
    damaged = kept_copy("damaged")
    gif = damaged / "report" / "replays" / made.name
    gif.write_bytes(gif.read_bytes()[:-10])
    for folder in (other, damaged):
        text = write_report(folder, tmp_path / f"{folder.name}-report", reps=200).read_text()
        assert "Replays skipped: no run in this folder keeps its policy files" in text
        assert "kept from an earlier report" not in text


def test_report_on_results_kept_without_policies_says_so_once(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    from kaleibench.analysis.report import write_report

    run_dir, _ = trained
    results = tmp_path / "results"
    kept = results / "qmix" / "mpe__spread-v0" / "seed_1"
    shutil.copytree(run_dir, kept, ignore=shutil.ignore_patterns("*.pt"))
    text = write_report(results, tmp_path / "report", reps=200).read_text()
    assert "Replays skipped: no run in this folder keeps its policy files" in text
    assert "no such policy file" not in text
    assert not (tmp_path / "report" / "replays").exists() or not list(
        (tmp_path / "report" / "replays").glob("*.gif"))
