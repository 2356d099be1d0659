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
    return {**reference, "provenance": {**reference["provenance"], "platform": "elsewhere"}}


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
    with pytest.raises(IncompleteResultsError, match="seed 1"):
        reg.build_reference(results_dir)


def test_identical_results_pass(results_dir: Path) -> None:
    ref = reg.build_reference(results_dir)
    assert reg.check_against_reference(results_dir, ref) == []
    assert reg.check_against_reference(results_dir, _other_machine(ref)) == []
    assert "passed" in reg.format_regressions([])


def test_exact_mode_flags_lowered_and_changed_cells(results_dir: Path) -> None:
    ref = reg.build_reference(results_dir)
    _shift(results_dir, "kalei-qmix", TASK, -1e-3, seeds=(1,))
    _shift(results_dir, "qmix", "mpe/tag-v0", +0.5, seeds=(0,))
    found = reg.check_against_reference(results_dir, ref)
    assert [(r.variant, r.task, r.kind, r.mode) for r in found] == [
        ("qmix", "mpe/tag-v0", "changed", "exact"),
        ("kalei-qmix", TASK, "regressed", "exact"),
    ]
    text = reg.format_regressions(found)
    assert "FAILED: 2 cell(s)" in text and "REGRESSED kalei-qmix / mpe/spread-v0 [exact]" in text


def test_statistical_mode_needs_significance_and_tolerance(results_dir: Path) -> None:
    ref = _other_machine(reg.build_reference(results_dir))
    _shift(results_dir, "qmix", TASK, -2.0, seeds=(0, 1, 2, 3))  # consistent but < tolerance 10
    assert reg.check_against_reference(results_dir, ref) == []
    _shift(results_dir, "qmix", TASK, -18.0, seeds=(0, 1, 2, 3))  # total drop 20 > 10
    (hit,) = reg.check_against_reference(results_dir, ref)
    assert (hit.variant, hit.task, hit.kind, hit.mode) == ("qmix", TASK, "regressed", "statistical")
    assert hit.extra["drop"] == pytest.approx(20.0) and hit.extra["tolerance"] == pytest.approx(10)
    assert hit.extra["p"] < 0.01 and "Welch" in str(hit)


def test_statistical_mode_ignores_noisy_drop(results_dir: Path) -> None:
    ref = _other_machine(reg.build_reference(results_dir))
    _shift(results_dir, "qmix", TASK, -60.0, seeds=(0,))  # mean drop 15 but one outlier seed
    _shift(results_dir, "qmix", TASK, +5.0, seeds=(1,))
    assert reg.check_against_reference(results_dir, ref) == []


def test_config_change_switches_to_statistical(results_dir: Path) -> None:
    ref = reg.build_reference(results_dir)
    ref["cells"]["qmix"][TASK]["config_hashes"][0] = "old-hash"
    _shift(results_dir, "qmix", TASK, -1e-3, seeds=(0,))  # exact mode would flag this
    assert reg.check_against_reference(results_dir, ref) == []


def test_missing_cells_fail(results_dir: Path) -> None:
    ref = reg.build_reference(results_dir)
    path = _final(results_dir, "kalei-qmix", "mpe/tag-v0", 3)
    path.unlink()
    status = path.parent / "status.json"
    status.write_text(json.dumps({"state": "failed", "error": "boom"}))
    (hit,) = reg.check_against_reference(results_dir, ref)
    assert (hit.variant, hit.task, hit.kind) == ("kalei-qmix", "mpe/tag-v0", "missing")
    assert "seed(s) [3]" in str(hit)
