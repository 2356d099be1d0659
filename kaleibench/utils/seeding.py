"""One root seed, split into named independent streams (numpy SeedSequence)."""

from __future__ import annotations

import zlib

import numpy as np
import torch

STREAMS = ("env", "init", "act", "sample", "algo", "eval")


def stream_seed(root: int, name: str) -> int:
    """A 63-bit seed for stream ``name`` of root seed ``root`` (independent across names).

    Examples:
        >>> stream_seed(0, "env") == stream_seed(0, "env") != stream_seed(0, "act")
        True
    """
    ss = np.random.SeedSequence([root, zlib.crc32(name.encode())])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ [1, 2**32]) >> 1


def numpy_stream(root: int, name: str) -> np.random.Generator:
    """A numpy Generator for stream ``name``."""
    return np.random.default_rng(stream_seed(root, name))


def torch_stream(root: int, name: str) -> torch.Generator:
    """A CPU torch Generator for stream ``name``."""
    gen = torch.Generator()
    gen.manual_seed(stream_seed(root, name))
    return gen


def eval_seeds(n_episodes: int, offset: int = 0) -> list[int]:
    """The fixed evaluation episode seeds shared by every variant (paired comparisons).

    A fixed list from 10^9 on, so every variant meets the same episodes. Training episode
    seeds are drawn from the run's own stream over [0, 2^31 − 1), so a training episode can
    coincide with an evaluation episode, with probability ≈ n / 2^31 per drawn seed (≈ 5e-8
    for 100 eval seeds): negligible, but not excluded.

    Examples:
        >>> eval_seeds(3)
        [1000000000, 1000000001, 1000000002]
    """
    return [1_000_000_000 + offset + k for k in range(n_episodes)]
