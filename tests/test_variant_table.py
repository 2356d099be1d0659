"""The report's Variants section: config diffs from the class defaults, overrides, cost."""

from __future__ import annotations

from pathlib import Path

from kaleibench.analysis.scores import load_results
from kaleibench.analysis.synthetic import write_synthetic_results
from kaleibench.analysis.variant_table import config_diff, variant_lines


def _spec(config: dict[str, object], **extra: object) -> dict[str, object]:
    return {"algo": "kaleibench.algos.qmix:Qmix", "config": config,
            "task_spec": {"time_limit_is_task": True}, **extra}


def test_config_diff_lists_only_changed_fields() -> None:
    from kaleibench.algos.qmix import QmixConfig
    from kaleibench.config import to_dict

    config = to_dict(QmixConfig())
    config.update(lr=0.001, td_lambda=0.6, timeout_is_terminal=True)  # resolved as the task says
    assert config_diff(_spec(config)) == {"lr": 0.001, "td_lambda": 0.6}
    config["timeout_is_terminal"] = False  # forced against the task: a real difference
    assert config_diff(_spec(config))["timeout_is_terminal"] is False


def test_config_diff_of_an_overridden_variant_is_its_overrides() -> None:
    spec = _spec({"lr": 0.001}, overrides={"lr": 0.001}, base_variant="qmix")
    assert config_diff(spec) == {"lr": 0.001}


def test_an_unloadable_algorithm_is_named_not_raised() -> None:
    spec = {"algo": "not_a_module:Nope", "config": {}}
    assert "?" in config_diff(spec)


def test_the_section_states_the_total_training_cost(tmp_path: Path) -> None:
    root = write_synthetic_results(tmp_path / "s", variants=("qmix", "kalei-qmix"),
                                   tasks={"mpe/spread-v0": (-200.0, -100.0)}, seeds=(0, 1, 2),
                                   skills=(0.3, 0.6), t_max=720_000,
                                   eval_interval=240_000)  # fmt: skip
    results = load_results(root)
    text = "\n".join(variant_lines(results, ["qmix", "kalei-qmix"]))
    # synthetic runs take t_max / 1000 wall seconds each: 6 runs x 720 s = 1.2 h; no CPU rows
    assert "Training cost of the 6 completed runs: – CPU-hours, 1.2 hours of wall time" in text
    text = "\n".join(variant_lines(results, ["qmix"]))
    assert "of the 3 completed runs" in text
