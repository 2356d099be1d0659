"""Follows README's "Add a variant" section literally: a YAML-only and a plugin variant."""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

import kaleibench
from kaleibench.algos import load_variant
from kaleibench.algos.base import EnvInfo
from kaleibench.cli import main
from kaleibench.train.rollout import collect
from kaleibench.utils import io

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    text = README.read_text().split("## Add a variant", 1)[1]
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _run(args: list[str], out: Path) -> int:
    return main(["run", *args, "--task", "mpe/spread-v0", "--seed", "0", "--t-max", "400",
                 "--n-envs", "4", "--workers", "1", "--no-progress", "--out", str(out)])


def test_yaml_only_variant(tmp_path: Path) -> None:
    variant = tmp_path / "my_variant.yaml"
    variant.write_text(_blocks("yaml")[0])
    out = tmp_path / "runs"
    assert _run(["--variants", str(variant)], out) == 0
    spec = io.read_json(out / "my_variant/mpe__spread-v0/seed_0/spec.json")
    assert spec["config"]["hidden_dim"] == 128
    assert io.read_json(out / "my_variant/mpe__spread-v0/seed_0/status.json")["state"] == (
        "completed")


def test_plugin_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_plugin.py").write_text(_blocks("python")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_l2.yaml").write_text(
        "algo: my_plugin:L2Qmix\nconfig: {l2: 0.0001}\n")
    out = tmp_path / "runs"
    try:
        assert _run(["--variants", str(tmp_path / "my_l2.yaml")], out) == 0
        spec = io.read_json(out / "my_l2/mpe__spread-v0/seed_0/spec.json")
        assert spec["algo"] == "my_plugin:L2Qmix" and spec["config"]["l2"] == 0.0001
        # the plugin's loss term is part of the update
        variant = load_variant(str(tmp_path / "my_l2.yaml"))
        env = kaleibench.make("mpe/spread-v0", n_envs=4)
        algo = replace(variant, config=replace(variant.config, batch_size=4)).build(
            EnvInfo.of(env), 0)
        batch = collect(env, algo, 0, True).batch
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the README's code must run without warnings
            stats = algo.train_on(batch, 0)
        assert stats["l2"] > 0
    finally:
        sys.modules.pop("my_plugin", None)


def test_unknown_override_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    variant = tmp_path / "bad.yaml"
    variant.write_text(_blocks("yaml")[0].replace("hidden_dim", "hiden_dim"))
    assert _run(["--variants", str(variant)], tmp_path / "runs") == 2
    assert "did you mean" in capsys.readouterr().err.lower()
