"""The comparison headline: verdicts on synthetic results, small-n rules, the power helpers,
and the suite key that declares it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kaleibench.analysis import stats
from kaleibench.analysis.headline import (
    FULL,
    compute_headline,
    detectable_difference,
    power,
    ranges,
    render_headline,
    swept_values,
    welch_interval,
)
from kaleibench.analysis.report import write_report
from kaleibench.analysis.scores import load_results
from kaleibench.analysis.synthetic import write_synthetic_results
from kaleibench.cli import main
from kaleibench.config import ConfigError
from kaleibench.harness.suite import load_suite, parse_suite

TASKS = {"mpe/spread-v0": (-80.0, -30.0), "mpe/spread-sight05-v0": (-80.0, -50.0)}


def _headline(tmp_path: Path, variants: tuple[str, ...], skills: list[float], seeds: int,
              compare: tuple[str, str], rng_seed: int = 0):  # type: ignore[no-untyped-def]
    root = write_synthetic_results(tmp_path / "r", variants=variants, tasks=TASKS,
                                   seeds=range(seeds), skills=skills, compare=compare,
                                   rng=np.random.default_rng(rng_seed))
    return compute_headline(load_results(root), *compare, reps=2_000)


def test_ranges_group_tasks_by_sight_radius() -> None:
    got = ranges(["mpe/tag-4v2-sight05-v0", "mpe/spread-v0", "mpe/spread-sight10-v0",
                  "mpe/spread-sight05-v0", "made/up-v0"])
    assert got == [(FULL, ["mpe/spread-v0", "made/up-v0"]),
                   ("sight 1.0", ["mpe/spread-sight10-v0"]),
                   ("sight 0.5", ["mpe/tag-4v2-sight05-v0", "mpe/spread-sight05-v0"])]


def test_clear_improvement_is_called_per_range(tmp_path: Path) -> None:
    h = _headline(tmp_path, ("qmix-1r3", "kalei-qmix"), [0.5, 0.9], 6, ("kalei-qmix", "qmix-1r3"))
    assert [c.range for c in h.contrasts] == [FULL, "sight 0.5"]
    for c in h.contrasts:
        assert c.verdict == "A" and c.n_a == c.n_b == 6
        assert 0.3 < c.diff.point < 0.5 and c.diff.low > 0
        assert c.poi.point == 1.0 and c.poi.has_bounds  # 6 runs a side: bootstrap interval
    text = " ".join(h.sentences())
    assert text.count("kalei-qmix beats qmix-1r3") == 2 and "no detectable" not in text
    assert h.trend is not None and h.trend.low < 0 < h.trend.high  # same gain on both ranges
    assert "is not detectable at this n" in text


def test_worse_variant_is_called_worse(tmp_path: Path) -> None:
    h = _headline(tmp_path, ("qmix-1r3", "kalei-qmix"), [0.9, 0.5], 3, ("kalei-qmix", "qmix-1r3"))
    assert {c.verdict for c in h.contrasts} == {"B"}
    assert "qmix-1r3 beats kalei-qmix" in " ".join(h.sentences())


def test_equal_variants_give_no_detectable_difference_and_respect_small_n(tmp_path: Path) -> None:
    h = _headline(tmp_path, ("qmix-1r3", "kalei-qmix"), [0.7, 0.7], 3, ("kalei-qmix", "qmix-1r3"))
    for c in h.contrasts:
        assert c.verdict == "none" and c.diff.low < 0 < c.diff.high
        assert not c.poi.has_bounds  # 3 runs a side: point estimate only, no bootstrap
        assert math.isfinite(c.detectable) and c.detectable > abs(c.diff.point)
    text = " ".join(h.sentences())
    assert text.count("no detectable difference at this n") == 2 and "beats" not in text
    assert "(point)" in "\n".join(render_headline(h))


def test_one_run_a_side_draws_no_conclusion(tmp_path: Path) -> None:
    h = _headline(tmp_path, ("qmix-1r3", "kalei-qmix"), [0.5, 0.9], 1, ("kalei-qmix", "qmix-1r3"))
    assert {c.verdict for c in h.contrasts} == {"n/a"}
    assert "too few runs for an interval" in " ".join(h.sentences())


def test_sweep_family_is_pooled_and_each_field_has_an_effect(tmp_path: Path) -> None:
    points = [f"alma-mine+mi_weight={w}+mine_embed_dim={d}" for w in ("0.001", "0.01")
              for d in (64, 128)]
    skills = [0.5, 0.5, 0.5, 0.9, 0.9]  # only mi_weight=0.01 helps
    h = _headline(tmp_path, ("alma-alloc", *points), skills, 3, ("alma-mine", "alma-alloc"))
    assert h.a_members == points and h.b_members == ["alma-alloc"]
    full = h.contrasts[0]
    assert full.n_a == 12 and full.n_b == 3
    effects = {(k, v, c.range): c for k, v, c in h.effects}
    assert set(effects) == {(k, v, r) for k, v in [("mi_weight", "0.001"), ("mi_weight", "0.01"),
                                                   ("mine_embed_dim", "64"),
                                                   ("mine_embed_dim", "128")]
                            for r in (FULL, "sight 0.5")}
    assert effects[("mi_weight", "0.01", FULL)].diff.low > 0
    assert effects[("mi_weight", "0.001", FULL)].diff.low < 0 < effects[
        ("mi_weight", "0.001", FULL)].diff.high
    assert effects[("mine_embed_dim", "64", FULL)].n_a == 6
    assert len(h.points) == 4 * 2
    md = "\n".join(render_headline(h))
    assert "Effect of each swept field" in md and "mi_weight=0.01" in md


def test_report_opens_with_the_headline_only_when_declared(tmp_path: Path) -> None:
    declared = write_synthetic_results(tmp_path / "d", variants=("qmix-1r3", "kalei-qmix"),
                                       tasks=TASKS, skills=[0.5, 0.9],
                                       compare=("kalei-qmix", "qmix-1r3"))
    text = write_report(declared, reps=500, figures=False).read_text()
    assert "## Headline: kalei-qmix vs qmix-1r3" in text
    assert text.index("## Headline") < text.index("## Tables")
    plain = write_synthetic_results(tmp_path / "p", variants=("qmix-1r3", "kalei-qmix"),
                                    tasks=TASKS, skills=[0.5, 0.9])
    assert "Headline" not in write_report(plain, reps=500, figures=False).read_text()
    missing = write_synthetic_results(tmp_path / "m", variants=("qmix-1r3", "kalei-qmix"),
                                      tasks=TASKS, skills=[0.5, 0.9], compare=("qmix", "qmix-1r3"))
    assert "Headline skipped: compare: no variant `qmix`" in write_report(
        missing, reps=500, figures=False).read_text()


def test_welch_interval_and_power_are_calibrated() -> None:
    i = welch_interval(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert i.point == -1.0 and i.low < -1.0 < i.high
    assert not welch_interval(np.array([1.0]), np.array([1.0, 2.0])).has_bounds
    assert power(0.0, 0.05, 8, 8) == pytest.approx(0.05, abs=0.01)  # the test's own level
    assert power(0.1, 0.05, 8, 8) > power(0.1, 0.05, 3, 3) > power(0.05, 0.05, 3, 3)
    assert detectable_difference(0.06, 8, 8) < detectable_difference(0.06, 5, 5)
    assert power(detectable_difference(0.06, 8, 8), 0.06, 8, 8) >= 0.8
    rng = np.random.default_rng(3)  # the simulated power matches an independent simulation
    hits = [welch_interval(rng.normal(0.1, 0.06, 8), rng.normal(0, 0.06, 8)).low > 0
            for _ in range(2000)]
    assert float(np.mean(hits)) == pytest.approx(power(0.1, 0.06, 8, 8), abs=0.03)
    assert stats.MIN_BOOTSTRAP_N == 5


def test_swept_values_parse_override_names() -> None:
    assert swept_values("alma-mine+mi_weight=0.001+mine_embed_dim=64", "alma-mine") == {
        "mi_weight": "0.001", "mine_embed_dim": "64"}
    assert swept_values("alma-mine", "alma-mine") == {}
    assert swept_values("alma-mine+3f9a0c", "alma-mine") == {}  # shortened name: unknown


SUITE = {"name": "s", "t_max": 10, "seeds": [0], "variants": ["qmix", "qmix-1r3"],
         "tasks": [{"id": "mpe/spread-v0"}]}


def test_compare_key_is_validated_and_stays_out_of_the_hash() -> None:
    plain = parse_suite(dict(SUITE), "s.yaml")
    declared = parse_suite({**SUITE, "compare": {"a": "qmix-1r3", "b": "qmix"}}, "s.yaml")
    assert declared.compare == ("qmix-1r3", "qmix") and plain.compare is None
    assert declared.to_json()["hash"] == plain.to_json()["hash"]
    assert "compare" not in plain.to_json()
    assert declared.to_json()["compare"] == {"a": "qmix-1r3", "b": "qmix"}
    with pytest.raises(ConfigError, match="Did you mean: `qmix-1r3`"):
        parse_suite({**SUITE, "compare": {"a": "qmix-1r4", "b": "qmix"}}, "s.yaml")
    with pytest.raises(ConfigError, match="unknown key `bb`"):
        parse_suite({**SUITE, "compare": {"a": "qmix", "bb": "qmix-1r3"}}, "s.yaml")
    with pytest.raises(ConfigError, match="two different"):
        parse_suite({**SUITE, "compare": {"a": "qmix", "b": "qmix"}}, "s.yaml")
    sweep = {**SUITE, "variants": ["alma-alloc", {"variant": "alma-mine",
                                                  "sweep": {"mi_weight": [0.001, 0.01]}}],
             "compare": {"a": "alma-mine", "b": "alma-alloc"}}
    assert parse_suite(sweep, "s.yaml").compare == ("alma-mine", "alma-alloc")


def test_misspelt_compare_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nt_max: 10\nseeds: [0]\nvariants: [qmix, qmix-1r3]\n"
                    "tasks:\n  - id: mpe/spread-v0\ncompar: {a: qmix, b: qmix-1r3}\n")
    assert main(["run", "--suite", str(path), "--out", str(tmp_path / "o"), "--workers", "1",
                 "--no-progress"]) == 2
    assert "Did you mean: `compare`" in capsys.readouterr().err

@pytest.mark.parametrize("name", ["kalei-vs-1r3", "mine-ablation"])
def test_comparison_suites_declare_their_comparison(name: str) -> None:
    suite = load_suite(name)
    assert suite.compare is not None and len(suite.seeds) >= 5
    radii = {r for r, _ in ranges([t.id for t in suite.tasks])}
    assert FULL in radii and len(radii) >= 2  # full and partial observation
