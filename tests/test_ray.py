"""The Ray executor on a local Ray instance (num_cpus=2): same specs, same results layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaleibench.cli import main
from kaleibench.utils import io

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starts a Ray instance; CI runs it with `pytest -m slow`

TINY = """
name: tiny-ray
version: 1
t_max: 100
n_envs: 4
eval_interval: 100
eval_episodes: 4
seeds: [0, 1]
tasks:
  - id: mpe/spread-v0
    bounds: {random: -79.61, reference: -30.89}
variants: [qmix, random]
"""


def test_ray_executor_matches_local(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    args = ["run", "--suite", str(suite), "--no-progress"]
    assert main([*args, "--executor", "ray", "--workers", "2", "--out", str(tmp_path / "ray")]) == 0
    assert main([*args, "--workers", "1", "--out", str(tmp_path / "local")]) == 0
    for variant in ("qmix", "random"):
        for seed in (0, 1):
            rel = f"{variant}/mpe__spread-v0/seed_{seed}/final.json"
            a, b = io.read_json(tmp_path / "ray" / rel), io.read_json(tmp_path / "local" / rel)
            assert a["final_returns"] == b["final_returns"] and a["run_id"] == b["run_id"]
