"""Reference building and the regression check (exact and statistical modes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kaleibench.analysis import regression as reg
from kaleibench.analysis.scores import IncompleteResultsError, task_slug
from kaleibench.analysis.synthetic import write_synthetic_results

TASK = "mpe/spread-v0"  # bounds: random -200, reference -100 -> tolerance 10% = 10.0


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    return write_synthetic_results(tmp_path / "smoke", seeds=(0, 1, 2, 3))


def _final(root: Path, variant: str, task: str, seed: int) -> Path:
    return root / variant / task_slug(task) / f"seed_{seed}" / "final.json"


def _shift(root: Path, variant: str, task: str, delta: float, seeds: tuple[int, ...]) -> None:
    for seed in seeds:
        path = _final(root, variant, task, seed)
        final = json.loads(path.read_text())
        final["final_return"] += delta
        path.write_text(json.dumps(final))


def _other_machine(reference: dict[str, Any]) -> dict[str, Any]:
    """The reference as if made on another CPU (its numerics fingerprint differs)."""
    return {**reference, "provenance": {**reference["provenance"], "numerics_hash": "elsewhere"}}


def test_reference_records_scores_and_provenance(results_dir: Path, tmp_path: Path) -> None:
    ref = reg.build_reference(results_dir, command="kaleibench check --suite smoke --update")
    cell = ref["cells"]["qmix"][TASK]
    final = json.loads(_final(results_dir, "qmix", TASK, 2).read_text())
    assert cell["seeds"] == [0, 1, 2, 3] and cell["scores"][2] == final["final_return"]
    assert cell["config_hashes"] == ["hash-qmix"] * 4
    assert ref["suite"] == {"name": "smoke", "hash": "smoke-hash", "version": 1}
    assert ref["provenance"]["platform"] == "synthetic" and "numpy" in ref["provenance"]["versions"]
    assert ref["command"].startswith("kaleibench check")
    path = reg.save_reference(ref, tmp_path / "ref" / "smoke.json")
    assert reg.load_reference(path) == ref


def test_reference_refuses_incomplete_grid(results_dir: Path) -> None:
    _final(results_dir, "qmix", TASK, 1).unlink()
    with pytest.raises(IncompleteResultsError, match="seed 1") as error:
        reg.build_reference(results_dir)
    # `kaleibench reference` has no --allow-incomplete: the error must not suggest one
    assert "--allow-incomplete" not in str(error.value)
    assert "a reference needs every cell" in str(error.value)


def _kinds(report: reg.CheckReport) -> dict[tuple[str, str], str]:
    return {(v.variant, v.task): v.kind for v in report.verdicts}


def test_identical_results_pass(results_dir: Path) -> None:
    ref = reg.build_reference(results_dir)
    report = reg.check_against_reference(results_dir, ref)
    assert report.exact and not report.failures
    assert set(_kinds(report).values()) == {"identical"}
    elsewhere = reg.check_against_reference(results_dir, _other_machine(ref))
    assert not elsewhere.exact and "numerics fingerprint differs" in elsewhere.why_not_exact
    assert not elsewhere.failures and set(_kinds(elsewhere).values()) <= {"ok", "inconclusive"}
    assert "check passed" in reg.format_report(elsewhere)


def test_exact_mode_calls_float_noise_changed_not_regressed(results_dir: Path) -> None:
    ref = reg.build_reference(results_dir)
    _shift(results_dir, "kalei-qmix", TASK, -1e-3, seeds=(1,))
    _shift(results_dir, "qmix", "mpe/tag-v0", +0.5, seeds=(0,))
    report = reg.check_against_reference(results_dir, ref)
    assert [(r.variant, r.task, r.kind, r.mode) for r in report.failures] == [
        ("qmix", "mpe/tag-v0", "changed", "exact"),
        ("kalei-qmix", TASK, "changed", "exact"),
    ]
    text = reg.format_report(report)
    assert "FAILED: 2 cell(s)" in text and "CHANGED kalei-qmix / mpe/spread-v0 [exact]" in text
    assert "statistical rule: ok" in text or "statistical rule: inconclusive" in text


def test_platform_string_alone_does_not_decide_exact_mode(results_dir: Path) -> None:
    """Same platform/versions/configs but another CPU: numbers may differ, no exact failure."""
    ref = reg.build_reference(results_dir)
    ref["provenance"] = {**ref["provenance"], "numerics_hash": "other-cpu"}
    _shift(results_dir, "qmix", TASK, -1e-3, seeds=(0,))
    report = reg.check_against_reference(results_dir, ref)
    assert not report.exact and not report.failures


def test_statistical_mode_needs_a_drop_beyond_tolerance(results_dir: Path) -> None:
    ref = _other_machine(reg.build_reference(results_dir))
    _shift(results_dir, "qmix", TASK, -2.0, seeds=(0, 1, 2, 3))  # consistent but < tolerance 10
    assert not reg.check_against_reference(results_dir, ref).failures
    _shift(results_dir, "qmix", TASK, -58.0, seeds=(0, 1, 2, 3))  # total drop 0.6 gap
    report = reg.check_against_reference(results_dir, ref)
    (hit,) = report.failures
    assert (hit.variant, hit.task, hit.kind, hit.mode) == ("qmix", TASK, "regressed", "statistical")
    assert hit.extra["drop"] == pytest.approx(60.0) and hit.extra["tolerance"] == pytest.approx(10)
    assert "Holm" in str(hit)


def test_statistical_mode_ignores_noisy_drop(results_dir: Path) -> None:
    ref = _other_machine(reg.build_reference(results_dir))
    _shift(results_dir, "qmix", TASK, -60.0, seeds=(0,))  # mean drop 15 but one outlier seed
    _shift(results_dir, "qmix", TASK, +5.0, seeds=(1,))
    assert not reg.check_against_reference(results_dir, ref).failures


def test_too_few_seeds_is_inconclusive_never_a_match(tmp_path: Path) -> None:
    root = write_synthetic_results(tmp_path / "smoke", seeds=(0, 1))
    ref = _other_machine(reg.build_reference(root))
    report = reg.check_against_reference(root, ref)
    assert not report.failures and report.inconclusive
    assert all(v.extra["mdd_gaps"] > 0.5 for v in report.inconclusive)
    text = reg.format_report(report)
    assert "INCONCLUSIVE" in text and "can only detect a drop of" in text
    assert "match" not in text.replace("not a match", "")


@pytest.mark.parametrize("value", [float("nan"), float("-inf"), -1500.0])
def test_a_collapsed_seed_is_named_even_when_the_test_is_inconclusive(
        tmp_path: Path, value: float) -> None:
    root = write_synthetic_results(tmp_path / "smoke", seeds=(0, 1))
    ref = _other_machine(reg.build_reference(root))
    path = _final(root, "qmix", TASK, 1)
    final = json.loads(path.read_text())
    final["final_return"] = value
    path.write_text(json.dumps(final))
    (hit,) = reg.check_against_reference(root, ref).failures
    assert hit.kind == "collapsed" and "seed(s) [1]" in hit.detail


def test_extra_seeds_join_the_sample_and_extra_cells_are_listed(tmp_path: Path) -> None:
    root = write_synthetic_results(tmp_path / "r", seeds=(0, 1, 2, 3))
    ref = _other_machine(reg.build_reference(root))
    for tasks in ref["cells"].values():  # the reference knew seeds 0-1 and one variant
        for entry in tasks.values():
            for key in ("seeds", "scores", "config_hashes"):
                entry[key] = entry[key][:2]
    del ref["cells"]["kalei-qmix"]
    report = reg.check_against_reference(root, ref)
    assert all(len(v.new_scores) == 4 for v in report.verdicts)
    assert report.unchecked and all(c.startswith("kalei-qmix / ") for c in report.unchecked)
    assert "UNCHECKED kalei-qmix" in reg.format_report(report)


def test_config_change_switches_to_statistical(results_dir: Path) -> None:
    ref = reg.build_reference(results_dir)
    ref["cells"]["qmix"][TASK]["config_hashes"][0] = "old-hash"
    _shift(results_dir, "qmix", TASK, -1e-3, seeds=(0,))  # exact mode would flag this
    report = reg.check_against_reference(results_dir, ref)
    assert not report.failures
    assert _kinds(report)[("qmix", TASK)] in ("ok", "inconclusive")


def test_missing_cells_fail(results_dir: Path) -> None:
    ref = reg.build_reference(results_dir)
    path = _final(results_dir, "kalei-qmix", "mpe/tag-v0", 3)
    path.unlink()
    status = path.parent / "status.json"
    status.write_text(json.dumps({"state": "failed", "error": "boom"}))
    (hit,) = reg.check_against_reference(results_dir, ref).failures
    assert (hit.variant, hit.task, hit.kind) == ("kalei-qmix", "mpe/tag-v0", "missing")
    assert "seed(s) [3]" in str(hit)
