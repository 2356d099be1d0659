"""Provenance of a run: package versions, git sha, platform."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("kaleibench", "torch", "mpe2", "pettingzoo", "gymnasium", "numpy", "scipy")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that can change results."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_sha() -> str | None:
    """The repository's HEAD sha (with ``+dirty`` if uncommitted changes), if in a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def platform_string() -> str:
    """Machine and OS, for deciding whether exact score comparison applies."""
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return f"{platform.system()}-{platform.machine()}-{py}"
