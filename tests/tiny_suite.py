"""A one-cell suite file (100 steps on spread) for CLI tests, written where a test wants it."""

from __future__ import annotations

from pathlib import Path

TINY = """name: tiny
version: 1
t_max: 100
n_envs: 2
eval_interval: 100
eval_episodes: 2
seeds: [0]
tasks:
  - id: mpe/spread-v0
    bounds: {random: -79.61, reference: -30.89}
variants: VARIANTS
"""


def write_tiny_suite(folder: Path, variants: str = "[random]") -> Path:
    """``folder/tiny.yaml`` listing ``variants`` (YAML flow text, e.g. ``[qmix]``)."""
    path = folder / "tiny.yaml"
    path.write_text(TINY.replace("VARIANTS", variants))
    return path
