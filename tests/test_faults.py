"""Fault injection on results folders: the guarantees of docs/reliability.md, kept true.

Every test here provokes one fault (a concurrent run, a killed write, flipped bytes, a full
disk, a malformed file, a bad suite) on a tiny grid and checks that it is either recovered
exactly or refused, naming the file, the key or the holder. A training run here takes about
a second: the grid is one QMIX variant with 4-episode batches (so it learns and its
checkpoint holds real optimiser and buffer state) for 200 steps.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from kaleibench.cli import main
from kaleibench.evaluate import RunFolderError, load_run
from kaleibench.harness import runner
from kaleibench.harness.grid import expand
from kaleibench.harness.integrity import CorruptFileError, load_sealed, payload_digest
from kaleibench.harness.lock import LOCK_NAME, Lock, LockHeld, process_start
from kaleibench.harness.runner import is_alive, run_cell
from kaleibench.harness.suite import load_suite
from kaleibench.train.loop import Run
from kaleibench.train.timing import FINAL_TIMING_KEYS, strip_timing
from kaleibench.utils import io

VARIANT = """
name: qmix-small
algo: kaleibench.algos.qmix:Qmix
config: {agent: gru, hidden_dim: 16, batch_size: 4, buffer_size: 64}
"""
SUITE = """
name: faults
version: 1
t_max: 200
n_envs: 2
eval_interval: 100
eval_episodes: 2
log_interval: 50
checkpoint_interval: 50
seeds: [{seeds}]
tasks:
  - id: mpe/spread-v0
    bounds: {{random: -79.61, reference: -30.89}}
variants: [{variant}]
"""
RUN = "qmix-small/mpe__spread-v0/seed_0"
TIMING = FINAL_TIMING_KEYS


def _write_suite(folder: Path, seeds: str = "0", name: str = "suite.yaml", **fields: Any) -> Path:
    variant = folder / "qmix-small.yaml"
    variant.write_text(VARIANT)
    text = SUITE.format(seeds=seeds, variant=variant)
    for key, value in fields.items():
        text = re.sub(rf"^{key}:.*$", f"{key}: {value}", text, flags=re.MULTILINE)
    path = folder / name
    path.write_text(text)
    return path


def _run(suite: Path, out: Path, *extra: str) -> int:
    return main(["run", "--suite", str(suite), "--out", str(out), "--workers", "1",
                 "--no-progress", *extra])


def _result(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    final = io.read_json(run_dir / "final.json")
    rows = [strip_timing(r) for r in io.read_jsonl(run_dir / "metrics.jsonl")]
    return rows, {k: v for k, v in final.items() if k not in TIMING}


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A completed reference run of the tiny grid (copied, never modified, by the tests)."""
    tmp = tmp_path_factory.mktemp("faults")
    suite = _write_suite(tmp)
    assert _run(suite, tmp / "ref") == 0
    return {"suite": suite, "out": tmp / "ref", "result": _result(tmp / "ref" / RUN)}


@pytest.fixture()
def done(ref: dict[str, Any], tmp_path: Path) -> Path:
    """A private copy of the completed reference folder."""
    out = tmp_path / "out"
    shutil.copytree(ref["out"], out)
    return out


def _interrupted(ref: dict[str, Any], out: Path, after_steps: int = 3) -> Path:
    """A cell stopped by Ctrl-C after ``after_steps`` iterations (checkpoint on disk)."""
    suite = load_suite(str(ref["suite"]))
    (cell,) = expand(suite)
    calls = {"n": 0}
    original = Run.train_step

    def step(self: Run) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] > after_steps:
            raise KeyboardInterrupt
        return original(self)

    Run.train_step = step  # type: ignore[method-assign]
    try:
        outcome = run_cell(cell.spec, str(out), False)
    finally:
        Run.train_step = original  # type: ignore[method-assign]
    assert outcome.state == "interrupted"
    run_dir = out / RUN
    assert (run_dir / "checkpoint.pt").is_file()
    return run_dir


def _flip_tensor_bytes(path: Path) -> None:
    """Overwrite bytes inside the largest tensor record of a .pt zip (leaves the zip valid
    for torch.load, which does not check CRCs: the silent case)."""
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(fh.read(2), "little") for _ in range(2))
        start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        fh.seek(start)
        fh.write(bytes(64 * [0x5A]))


# ------------------------------------------------------------------------ locks / concurrency
def test_second_run_is_refused_while_the_folder_is_locked(
        ref: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from kaleibench.harness.lock import Lock
        Lock({str(out)!r}, "kaleibench run").acquire()
        print("locked", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert _run(ref["suite"], out) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and socket.gethostname() in err and "since" in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing else written
    finally:
        holder.kill()
        holder.wait()
    # The holder died (SIGKILL: its lock file is still there): the next run recovers it.
    assert (out / LOCK_NAME).exists()
    assert _run(ref["suite"], out) == 0
    assert _result(out / RUN) == ref["result"]
    assert not (out / LOCK_NAME).exists()


def test_stale_lock_of_a_reused_pid_is_recovered(ref: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # A live pid (our parent) with another start time: the holder died and its pid was reused.
    (out / LOCK_NAME).write_text(json.dumps({
        "host": socket.gethostname(), "pid": os.getppid(), "pid_start": "other-boot:1",
        "since": time.time() - 3600, "what": "kaleibench run", "token": "x"}))
    assert _run(ref["suite"], out) == 0
    # A status.json of the same dead run does not keep the cell "busy" for ever either.
    status = {"state": "running", "host": socket.gethostname(), "pid": os.getppid(),
              "pid_start": "other-boot:1", "heartbeat": time.time()}
    assert not is_alive(status)
    assert is_alive({**status, "pid_start": process_start(os.getppid())})


def test_live_lock_holder_on_this_host_is_never_taken_over(tmp_path: Path) -> None:
    with Lock(tmp_path, "kaleibench run"):
        with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
            Lock(tmp_path, "another run").acquire()
    Lock(tmp_path, "another run").acquire().release()  # released: free again


def test_a_stale_lock_is_taken_over_by_exactly_one_of_many(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from kaleibench.harness import lock as lock_module

    original_read = lock_module._read

    def slow_read(path: Path) -> tuple[dict[str, Any] | None, float]:
        found = original_read(path)
        time.sleep(0.02)  # widen the window between judging a lock stale and removing it
        return found

    monkeypatch.setattr(lock_module, "_read", slow_read)
    (tmp_path / LOCK_NAME).write_text(json.dumps({
        "host": socket.gethostname(), "pid": 2**22 + 1, "since": 0.0, "token": "dead"}))
    won: list[Lock] = []
    refused: list[LockHeld] = []
    barrier = threading.Barrier(8)

    def contend() -> None:
        barrier.wait()
        try:
            won.append(Lock(tmp_path, "contender").acquire())
        except LockHeld as exc:
            refused.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == won[0].token
    won[0].release()


def test_cell_lock_makes_a_cell_busy_and_the_command_exit_non_zero(
        ref: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    run_dir = out / RUN
    with Lock(run_dir, "cell run by a Ray worker"):
        assert _run(ref["suite"], out) == 1
    assert "busy" in capsys.readouterr().out
    assert not (run_dir / "metrics.jsonl").exists()  # the holder's files were not touched


def test_cell_is_rechecked_just_before_it_starts(ref: dict[str, Any], done: Path) -> None:
    (cell,) = expand(load_suite(str(ref["suite"])))
    # Planned as to-do by a slow planner, but another process completed it meanwhile.
    before = (done / RUN / "metrics.jsonl").read_bytes()
    outcome = run_cell(cell.spec, str(done), False)
    assert outcome.state == "skipped"
    assert (done / RUN / "metrics.jsonl").read_bytes() == before


def test_two_concurrent_runs_never_duplicate_metrics_rows(
        ref: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kaleibench.cli", "run", "--suite", str(ref["suite"]),
           "--out", str(out), "--workers", "1", "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    # Exactly one trains the cell; the other is refused (folder locked, exit 2) or, if it
    # started after the first ended, skips the completed cell.
    trained = [r for r in results if r[0] == 0 and "completed 1" in r[1]]
    others = [r for r in results if r not in trained]
    assert len(trained) == 1, results
    assert others[0][0] == 2 or "skipped 1" in others[0][1], results
    assert _result(out / RUN) == ref["result"]


# ------------------------------------------------------------------------ suite acceptance
@pytest.mark.parametrize("fields,flags", [
    ({"t_max": "200"}, ()),
    ({}, ("--seeds", "0", "0")),
    ({}, ("--tasks", "mpe/spread-v0", "mpe/spread-v0")),
])
def test_duplicate_cells_are_refused_up_front(
        tmp_path: Path, fields: dict[str, str], flags: tuple[str, ...],
        capsys: pytest.CaptureFixture[str]) -> None:
    suite = _write_suite(tmp_path, seeds="0, 0" if not flags else "0", **fields)
    assert _run(suite, tmp_path / "out", *flags) == 2
    assert "more than once" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_duplicate_variants_are_refused(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    suite = _write_suite(tmp_path)
    suite.write_text(suite.read_text().replace("variants: [", "variants: [qmix, qmix, "))
    assert _run(suite, tmp_path / "out") == 2
    assert "`variants` lists qmix more than once" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs-escape", "''", ".", "a/b", "..x/.."])
def test_unsafe_suite_or_variant_names_are_refused(
        tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "a" / "b" / "w"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # without --out, results go to results/runs/<name> under here
    suite = _write_suite(work)
    suite.write_text(suite.read_text().replace("name: faults", f"name: {name}"))
    assert main(["run", "--suite", str(suite), "--no-progress"]) == 2
    assert "`name` must be a plain folder name" in capsys.readouterr().err
    variant = work / "qmix-small.yaml"
    suite = _write_suite(work)
    variant.write_text(VARIANT.replace("name: qmix-small", f"name: {name}"))
    assert _run(suite, work / "out") == 2
    err = capsys.readouterr().err
    assert str(variant) in err and "`name`" in err
    assert sorted(p.name for p in work.iterdir()) == ["qmix-small.yaml", "suite.yaml"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["a", "b", "w", "qmix-small.yaml", "suite.yaml"])  # nothing escaped either


def test_clashing_suite_is_refused_before_suite_json_is_written(
        ref: dict[str, Any], done: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    before = (done / "suite.json").read_bytes()
    other = _write_suite(tmp_path, name="other.yaml", t_max="150")
    assert _run(other, done) == 2
    assert "--out" in capsys.readouterr().err
    assert (done / "suite.json").read_bytes() == before


BAD_SUITES = [
    ("backend: cuda", "`backend`"),
    ("tasks: 5", "`tasks`"),
    ("variants: 5", "`variants`"),
    ("variants: []", "`variants`"),
    ("bounds: {random: abc, reference: -30.89}", "`bounds.random`"),
    ("bounds: {random: .nan, reference: -30.89}", "`bounds.random`"),
    ("bounds: {random: -79.61, reference: .inf}", "`bounds.reference`"),
]


@pytest.mark.parametrize("line,key", BAD_SUITES)
def test_suite_validation_gaps_exit_2_naming_file_and_key(
        tmp_path: Path, line: str, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    suite = _write_suite(tmp_path)
    text = suite.read_text()
    field = line.split(":")[0]
    if field == "bounds":
        text = text.replace("bounds: {random: -79.61, reference: -30.89}", line)
    elif field in ("tasks",):
        text = text.split("tasks:")[0] + line + "\nvariants" + text.split("variants", 1)[1]
    else:
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(field + ":"))
        text += "\n" + line + "\n"
    suite.write_text(text)
    assert _run(suite, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert str(suite) in err and key in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("config,key", [
    ("algo: os:system", "`algo: os:system`"),
    ("algo: kaleibench.algos.qmix:Qmix\nconfig: {lr: .nan}", "`lr`"),
])
def test_variant_validation_gaps_exit_2_naming_file(
        tmp_path: Path, config: str, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    suite = _write_suite(tmp_path)
    (tmp_path / "qmix-small.yaml").write_text(config + "\n")
    assert _run(suite, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "qmix-small.yaml" in err and key in err and "Traceback" not in err


def test_non_utf8_suite_file_names_the_file(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    suite = _write_suite(tmp_path)
    suite.write_bytes(suite.read_bytes() + b"\n# \xff\xfe\n")
    assert _run(suite, tmp_path / "out") == 2
    assert f"{suite}: not UTF-8" in capsys.readouterr().err


# ------------------------------------------------------------------------ integrity
def test_checkpoint_carries_a_checksum_that_detects_flipped_tensor_bytes(
        ref: dict[str, Any], tmp_path: Path) -> None:
    run_dir = _interrupted(ref, tmp_path / "out")
    ckpt = run_dir / "checkpoint.pt"
    load_sealed(ckpt)  # intact: verifies
    _flip_tensor_bytes(ckpt)
    with pytest.raises(CorruptFileError, match="checksum mismatch") as info:
        load_sealed(ckpt)
    assert info.value.path == ckpt and info.value.expected and info.value.found


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_checkpoint_restarts_the_cell_loudly_and_exactly(
        ref: dict[str, Any], tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    run_dir = _interrupted(ref, out)
    ckpt = run_dir / "checkpoint.pt"
    if damage == "flip":
        _flip_tensor_bytes(ckpt)
    elif damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    else:
        ckpt.write_bytes(b"")
    (cell,) = expand(load_suite(str(ref["suite"])))
    outcome = run_cell(cell.spec, str(out), False)
    assert outcome.state == "completed"
    assert "restarted from scratch" in outcome.detail and str(ckpt) in outcome.detail
    assert (run_dir / "checkpoint.pt.corrupt").exists()
    assert _result(run_dir) == ref["result"]
    assert "restarted from scratch" in io.read_json(run_dir / "status.json")["notes"][0]


def test_pickled_code_in_a_checkpoint_is_refused_and_never_suggested(
        ref: dict[str, Any], tmp_path: Path) -> None:
    import torch

    out = tmp_path / "out"
    run_dir = _interrupted(ref, out)
    torch.save({"payload": os.system}, run_dir / "checkpoint.pt")  # loading it would import code
    (cell,) = expand(load_suite(str(ref["suite"])))
    outcome = run_cell(cell.spec, str(out), False)
    assert outcome.state == "completed" and "weights-only loader" in outcome.detail
    assert "weights_only=False" not in outcome.detail and "False" not in outcome.detail
    assert _result(run_dir) == ref["result"]


def test_resume_from_a_good_checkpoint_is_still_exact(ref: dict[str, Any],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_dir = _interrupted(ref, out)
    (run_dir / "spec.json").write_text("{")  # provenance lost: rewritten on resume
    (cell,) = expand(load_suite(str(ref["suite"])))
    outcome = run_cell(cell.spec, str(out), False)
    assert outcome.state == "completed" and outcome.detail == ""
    assert _result(run_dir) == ref["result"]
    assert io.read_json(run_dir / "spec.json")["run_id"] == cell.spec.run_id


@pytest.mark.parametrize("damage", ["shorter", "deleted", "garbled"])
def test_metrics_out_of_step_with_the_checkpoint_restart_the_cell(
        ref: dict[str, Any], tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    run_dir = _interrupted(ref, out)
    metrics = run_dir / "metrics.jsonl"
    data = metrics.read_bytes()
    if damage == "shorter":
        metrics.write_bytes(data[: len(data) // 2])
    elif damage == "deleted":
        metrics.unlink()
    else:
        metrics.write_bytes(data[:10] + bytes(range(0xA0, 0xE0)) + data[74:])
    (cell,) = expand(load_suite(str(ref["suite"])))
    outcome = run_cell(cell.spec, str(out), False)
    assert outcome.state == "completed" and str(metrics) in outcome.detail
    assert b"\0" not in metrics.read_bytes()
    assert _result(run_dir) == ref["result"]


def test_corrupt_best_policy_is_refused_by_evaluate_status_and_report(
        done: Path, capsys: pytest.CaptureFixture[str]) -> None:
    best = done / RUN / "best.pt"
    _flip_tensor_bytes(best)
    with pytest.raises(RunFolderError, match="best.pt: checksum mismatch"):
        load_run(done / RUN, "best")
    load_run(done / RUN, "final")  # the other policy is intact
    assert main(["evaluate", str(done / RUN), "--policy", "best"]) == 2
    assert main(["status", str(done)]) == 0
    assert "best.pt: checksum mismatch" in capsys.readouterr().out
    assert main(["report", str(done), "--reps", "200", "--no-figures"]) == 1
    assert "best.pt: checksum mismatch" in capsys.readouterr().err


def test_results_kept_without_policies_stay_trusted(
        ref: dict[str, Any], done: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for policy in ("final.pt", "best.pt"):
        (done / RUN / policy).unlink()  # e.g. results committed with scores and logs only
    before = _result(done / RUN)
    capsys.readouterr()
    assert main(["status", str(done)]) == 0
    assert "missing" not in capsys.readouterr().out
    assert main(["report", str(done), "--reps", "200", "--no-figures"]) == 0
    assert _run(Path(ref["suite"]), done) == 0  # skipped as completed, not re-run
    assert "skipped 1" in capsys.readouterr().out
    assert _result(done / RUN) == before
    with pytest.raises(RunFolderError, match="final.pt"):
        load_run(done / RUN, "final")  # a replay needs the policy: named, refused


def test_folder_export_keeps_scores_and_logs_only_and_stays_usable(
        ref: dict[str, Any], done: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    main(["report", str(done), "--reps", "200", "--no-figures"])
    out = tmp_path / "published"
    assert main(["export", str(done), "--format", "folder", "--out", str(out)]) == 0
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {f"{RUN}/{n}" for n in ("spec.json", "status.json", "metrics.jsonl",
                                   "final.json")} <= files  # fmt: skip
    assert "suite.json" in files and "report/report.md" in files
    assert not [f for f in files if f.endswith(".pt") or "lock" in f]
    assert _result(out / RUN) == ref["result"]
    assert not list(tmp_path.glob(".published.export-*"))  # no temporary left behind
    assert _run(Path(ref["suite"]), out) == 0  # its cell counts as completed: not re-run
    assert "skipped 1" in capsys.readouterr().out
    # the destination must be new; a corrupt run is never exported
    assert main(["export", str(done), "--format", "folder", "--out", str(out)]) == 2
    assert main(["export", str(done), "--format", "folder"]) == 2
    final = done / RUN / "final.json"
    final.write_text(final.read_text().replace('"final_return": ', '"final_return": 1'))
    capsys.readouterr()
    assert main(["export", str(done), "--format", "folder", "--out", str(tmp_path / "b")]) == 1
    assert str(final) in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_folder_export_of_an_unfinished_grid_needs_allow_incomplete(
        ref: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    _interrupted(ref, out)
    capsys.readouterr()
    assert main(["export", str(out), "--format", "folder", "--out", str(tmp_path / "a")]) == 1
    assert "have not completed" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["export", str(out), "--format", "folder", "--out", str(tmp_path / "a"),
                 "--allow-incomplete"]) == 0  # fmt: skip
    assert "1 unfinished cell(s) left out" in capsys.readouterr().out
    assert not list((tmp_path / "a").rglob("*.pt"))


@pytest.mark.parametrize("content", [b"{}", b'{"final_return": ', b"[]", b"edit"])
def test_untrusted_final_json_is_rerun_not_skipped(
        ref: dict[str, Any], done: Path, content: bytes,
        capsys: pytest.CaptureFixture[str]) -> None:
    final = done / RUN / "final.json"
    if content == b"edit":
        obj = json.loads(final.read_bytes())
        obj["final_return"] += 1.0
        content = json.dumps(obj).encode()
    final.write_bytes(content)
    assert main(["report", str(done), "--reps", "200", "--no-figures"]) == 1
    assert str(final) in capsys.readouterr().err  # named; never a KeyError traceback
    assert _run(ref["suite"], done) == 0
    out = capsys.readouterr().out
    assert "completed 1" in out  # re-run, not "skipped", saying why
    assert "completed: qmix-small__mpe__spread-v0__s0" in out and str(final) in out
    assert _result(done / RUN) == ref["result"]


def test_check_refuses_a_cell_whose_final_json_was_edited(
        ref: dict[str, Any], done: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    reference = tmp_path / "reference.json"
    suite = str(ref["suite"])
    assert main(["reference", "--suite", suite, "--results", str(done), "--out",
                 str(reference)]) == 0
    assert main(["check", "--suite", suite, "--reference", str(reference), "--results",
                 str(done)]) == 0
    final = done / RUN / "final.json"
    obj = json.loads(final.read_bytes())
    obj["final_return"] += 1.0  # an edit that a plain reader would trust
    final.write_text(json.dumps(obj))
    capsys.readouterr()
    assert main(["check", "--suite", suite, "--reference", str(reference), "--results",
                 str(done)]) == 1
    assert "MISSING qmix-small" in capsys.readouterr().out


def test_deleted_metrics_of_a_completed_run_is_flagged(
        done: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (done / RUN / "metrics.jsonl").unlink()
    assert main(["status", str(done)]) == 0
    assert "metrics.jsonl" in capsys.readouterr().out


# ------------------------------------------------------------------------ OS errors
def _enospc_for(match: str, monkeypatch: pytest.MonkeyPatch) -> None:
    original = io.atomic_save

    def full_disk(path: str | Path, writer: Any) -> None:
        if match in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(path, writer)

    monkeypatch.setattr(io, "atomic_save", full_disk)


def test_disk_full_in_one_cell_fails_that_cell_and_the_grid_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    suite = _write_suite(tmp_path, seeds="0, 1")
    _enospc_for("seed_0", monkeypatch)  # every write of that cell fails, status.json included
    assert _run(suite, tmp_path / "out") == 1
    out = capsys.readouterr().out
    assert "completed 1" in out and "failed 1" in out
    assert "failed: qmix-small__mpe__spread-v0__s0" in out and "No space left" in out
    assert "could not be recorded" in out


def test_disk_full_everywhere_names_every_cell_without_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    suite = _write_suite(tmp_path, seeds="0, 1")
    _enospc_for("checkpoint.pt", monkeypatch)
    assert _run(suite, tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert "failed 2" in captured.out and "Traceback" not in captured.err
    status = io.read_json(tmp_path / "out" / RUN / "status.json")
    assert status["state"] == "failed" and status["t_env"] > 0  # progress kept


def test_disk_full_outside_a_cell_exits_1_without_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    suite = _write_suite(tmp_path)
    _enospc_for("suite.json", monkeypatch)
    assert _run(suite, tmp_path / "out") == 1
    assert "No space left" in capsys.readouterr().err
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # the lock is released


def test_a_failing_worker_fails_its_cell_only(tmp_path: Path) -> None:
    """Whatever a worker raises (a dead process surfaces the same way, as an exception from its
    future), the pool records that cell as failed, names the error and goes on."""
    from functools import partial

    from kaleibench.harness.pool import run_pool

    cells = expand(load_suite("smoke"), variants=["qmix"], tasks=["mpe/spread-v0"], seeds=[0, 1])
    specs = [c.spec for c in cells]
    broken = partial(int)  # int(spec, root, False) raises TypeError inside the worker
    outcomes = run_pool(specs, tmp_path, 2, False, broken, runner.Outcome)
    assert [o.state for o in outcomes] == ["failed", "failed"]
    assert all("TypeError" in o.detail for o in outcomes)
    assert {o.run_id for o in outcomes} == {s.run_id for s in specs}


# ------------------------------------------------------------------------ malformed files
@pytest.mark.parametrize("content", [b"[]", b"{", b"\xff\xfe", b"7"])
def test_malformed_status_json_blocks_neither_run_nor_status(
        ref: dict[str, Any], tmp_path: Path, content: bytes,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    suite = _write_suite(tmp_path, seeds="0, 1")
    shutil.copytree(ref["out"], out)
    (out / RUN / "status.json").write_bytes(content)
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "corrupt" in text and "status.json" in text
    assert _run(suite, out) == 0
    assert _result(out / RUN) == ref["result"]
    assert main(["status", str(out)]) == 0
    assert capsys.readouterr().out.count("\ncompleted   ") == 2


def test_deleted_status_json_is_shown_and_the_rerun_says_why(
        ref: dict[str, Any], done: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (done / RUN / "status.json").unlink()
    assert main(["status", str(done)]) == 0
    assert "status.json missing" in capsys.readouterr().out
    (cell,) = expand(load_suite(str(ref["suite"])))
    outcome = run_cell(cell.spec, str(done), False)
    assert outcome.state == "completed" and "status.json: missing" in outcome.detail
    assert _result(done / RUN) == ref["result"]


def test_non_utf8_metrics_of_a_completed_run_is_named_by_status(
        done: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = done / RUN / "metrics.jsonl"
    data = metrics.read_bytes()
    metrics.write_bytes(data[:100] + bytes(range(0x80, 0xC0)) + data[164:])
    assert main(["status", str(done)]) == 0
    text = capsys.readouterr().out
    assert "metrics.jsonl: corrupt line(s)" in text and "checksum mismatch" in text
    assert io.read_jsonl(metrics)  # the readable rows are still read


def test_report_allow_incomplete_names_a_corrupt_cell_and_goes_on(
        ref: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    suite = _write_suite(tmp_path, seeds="0, 1")
    assert _run(suite, out) == 0
    (out / RUN / "status.json").write_text("[]")
    (out / RUN.replace("seed_0", "seed_1") / "spec.json").write_text("{")  # provenance only
    assert main(["report", str(out), "--reps", "200", "--no-figures"]) == 1
    assert "status.json: expected a JSON object" in capsys.readouterr().err
    assert main(["report", str(out), "--reps", "200", "--no-figures",
                 "--allow-incomplete"]) == 0


# ------------------------------------------------------------------------ kills mid-write
def test_kill_mid_write_leaves_the_target_intact_and_the_orphan_is_removed(
        ref: dict[str, Any], done: Path) -> None:
    target = done / RUN / "final.json"
    before = target.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from kaleibench.utils import io
        def writer(tmp):
            with open(tmp, "wb") as fh:
                fh.write(b'{{"half": ')
                fh.flush()
                print("writing", flush=True)
                time.sleep(60)
        io.atomic_save({str(target)!r}, writer)
        """)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    orphans = list(target.parent.glob(".final.json.*.tmp"))
    assert len(orphans) == 1 and target.read_bytes() == before
    (done / ".suite.json.x.tmp").write_bytes(b"half")
    assert _run(ref["suite"], done) == 0  # the cell is intact: skipped, orphans cleared
    assert not list(done.glob(".*.tmp"))
    # The skipped cell is not touched; its orphan goes when the cell next runs.
    (cell,) = expand(load_suite(str(ref["suite"])))
    (done / RUN / "final.json").write_text("{}")
    assert run_cell(cell.spec, str(done), False).state == "completed"
    assert not list((done / RUN).glob(".*.tmp"))


def test_sigkill_at_a_random_point_then_resume_is_exact(
        ref: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kaleibench.cli", "run", "--suite", str(ref["suite"]),
           "--out", str(out), "--workers", "1", "--no-progress"]
    rng = random.Random(os.environ.get("KALEIBENCH_FAULT_SEED", "0"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.5, 4.0))  # start-up, mid-training or after the end
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _run(ref["suite"], out) == 0
    assert _result(out / RUN) == ref["result"]


def test_truncate_never_extends_a_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    with pytest.raises(ValueError, match="shorter than the expected 100"):
        io.truncate_file(path, 100)
    assert path.read_bytes() == b'{"a": 1}\n'  # not padded with NULs


def test_orphan_cleanup_never_removes_a_lock_being_taken(tmp_path: Path) -> None:
    # A lock's own temp file is not an orphan of an atomic write: removing it would make a
    # concurrent acquire fail.
    taking = tmp_path / f".{LOCK_NAME}.abc.ltmp"
    taking.write_text("{}")
    io.remove_orphan_temps(tmp_path)
    assert taking.exists()
    os.utime(taking, (time.time() - 3600, time.time() - 3600))  # left by a killed process
    io.remove_orphan_temps(tmp_path)
    assert not taking.exists()


def test_payload_digest_is_stable_across_save_and_load(tmp_path: Path) -> None:
    import torch

    payload = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3)[:, 1:], "b": [1, (2.5,)],
               3: {"x": torch.tensor(True)}, "n": None, "e": torch.empty(0, 4)}
    torch.save(payload, tmp_path / "p.pt")
    assert payload_digest(torch.load(tmp_path / "p.pt", weights_only=True)) == payload_digest(
        payload)
