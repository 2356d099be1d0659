"""Config overrides and sweeps, as a user types them: ``run --set``/``--sweep`` and suite YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_suite import write_tiny_suite

from kaleibench.cli import main
from kaleibench.overrides import SAFE_NAME, derived_name, parse_scalar
from kaleibench.utils import io

TASK = "mpe__spread-v0/seed_0"


def _suite(tmp_path: Path, variants: str) -> Path:
    return write_tiny_suite(tmp_path, variants)


def _run(suite: Path, out: Path, *extra: str) -> int:
    return main(["run", "--suite", str(suite), "--out", str(out), "--workers", "1",
                 "--no-progress", *extra])


def test_set_overrides_name_config_and_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite, out = _suite(tmp_path, "[qmix]"), tmp_path / "runs"
    assert _run(suite, out, "--set", "lr=1e-3", "--set", "td_lambda=0.6") == 0
    name = "qmix+lr=0.001+td_lambda=0.6"
    spec = io.read_json(out / name / TASK / "spec.json")
    assert spec["variant"] == name and spec["run_id"].startswith(name + "__")
    assert spec["config"]["lr"] == 0.001 and spec["config"]["td_lambda"] == 0.6
    assert spec["base_variant"] == "qmix"
    assert spec["overrides"] == {"lr": 0.001, "td_lambda": 0.6}
    assert io.read_json(out / "suite.json")["variants"] == [name]
    # the same variant without overrides is another run (another hash, another folder)
    assert _run(suite, out) == 0
    plain = io.read_json(out / "qmix" / TASK / "spec.json")
    assert plain["config_hash"] != spec["config_hash"] and "overrides" not in plain
    assert plain["config"]["lr"] == 0.0005
    # key order and number spelling do not matter: the same run is found and skipped
    capsys.readouterr()
    assert _run(suite, out, "--set", "td_lambda=0.6", "lr=0.001") == 0
    assert "skipped 1" in capsys.readouterr().out


def test_set_typo_and_bad_value_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite, out = _suite(tmp_path, "[qmix]"), tmp_path / "runs"
    assert _run(suite, out, "--set", "lrr=1e-3") == 2
    err = capsys.readouterr().err
    assert "unknown key `lrr`" in err and "Did you mean: `lr`" in err
    assert _run(suite, out, "--set", "lr=fast") == 2
    assert "`lr` must be float" in capsys.readouterr().err
    assert _run(suite, out, "--set", "lr") == 2
    assert "expected key=value" in capsys.readouterr().err
    assert not list(out.glob("*/*/seed_*"))  # nothing ran


def test_sweep_on_the_command_line_is_one_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite, out = _suite(tmp_path, "[qmix]"), tmp_path / "runs"
    assert _run(suite, out, "--sweep", "lr=1e-4,1e-3", "--set", "gamma=0.9") == 0
    names = ["qmix+gamma=0.9+lr=0.0001", "qmix+gamma=0.9+lr=0.001"]
    assert io.read_json(out / "suite.json")["variants"] == names
    for name, lr in zip(names, (1e-4, 1e-3), strict=True):
        config = io.read_json(out / name / TASK / "spec.json")["config"]
        assert config["lr"] == lr and config["gamma"] == 0.9
    capsys.readouterr()
    assert main(["report", str(out), "--reps", "200", "--no-figures"]) == 0
    report = (out / "report" / "report.md").read_text()
    assert all(name in report for name in names)


def test_suite_yaml_set_and_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = _suite(tmp_path, "\n  - qmix\n  - {variant: qmix, set: {lr: 1e-3}}\n"
                             "  - {variant: qmix, sweep: {td_lambda: [0.6, 0.8]}}")
    out = tmp_path / "runs"
    assert _run(suite, out) == 0
    names = ["qmix", "qmix+lr=0.001", "qmix+td_lambda=0.6", "qmix+td_lambda=0.8"]
    assert io.read_json(out / "suite.json")["variants"] == names
    assert io.read_json(out / "qmix+lr=0.001" / TASK / "spec.json")["config"]["lr"] == 0.001
    assert io.read_json(out / "qmix+td_lambda=0.8" / TASK / "spec.json")["config"][
        "td_lambda"] == 0.8


@pytest.mark.parametrize(("variants", "message"), [
    ("[{variant: qmix, set: {td_lamda: 0.6}}]", "Did you mean: `td_lambda`"),
    ("[{variant: qmix, sett: {lr: 0.1}}]", "Did you mean: `set`"),
    ("[{variant: qmix, sweep: {lr: 0.1}}]", "must be a non-empty list"),
    ("[qmix, {variant: qmix, set: {lr: 0.0005}}, {variant: qmix, set: {lr: 5.0e-4}}]",
     "listed twice"),
])
def test_suite_yaml_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  variants: str, message: str) -> None:
    assert _run(_suite(tmp_path, variants), tmp_path / "runs") == 2
    assert message in capsys.readouterr().err


def test_derived_names_are_one_safe_path_component() -> None:
    assert parse_scalar("1e-3") == 0.001 and parse_scalar("1E3") == 1000.0
    for items in ([("agent", "../etc/passwd")], [("agent", "a b*[x]")],
                  [("k", "x" * 300)], [("lr", float("nan"))]):
        name = derived_name("qmix", items)
        assert SAFE_NAME.match(name) and "/" not in name and len(name) <= 100, name
