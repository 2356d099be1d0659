"""Input checks and output helpers of the command line (kept out of ``cli.py``).

Each check returns nothing or raises :class:`UsageError`, which the CLI turns into exit code 2
with the message; none of them imports torch.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from kaleibench.registry import did_you_mean


class UsageError(ValueError):
    """Bad command-line input, found before any work is done (exit 2)."""


def ensure_writable_dir(path: str | Path, what: str) -> Path:
    """Create ``path`` if needed and prove a file can be written in it."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{what} {folder} is not writable: {exc}") from exc
    return folder


def result_variants(results: Path) -> list[str]:
    """Variant names of a results folder: ``suite.json``'s list plus run folders on disk."""
    names: list[str] = []
    try:
        names = [str(v) for v in json.loads((results / "suite.json").read_text())["variants"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    on_disk = sorted({p.parts[-3] for p in results.glob("*/*/seed_*") if p.is_dir()})
    return names + [v for v in on_disk if v not in names]


def check_report_input(results: Path, baseline: str | None) -> None:
    """A folder with runs in it, and a baseline that is one of its variants."""
    if not any(results.glob("*/*/seed_*")):
        raise UsageError(f"no runs found in {results}: run `kaleibench run ... --out {results}` "
                         "first, or give the folder that holds <variant>/<task>/seed_<k>/")
    if baseline is None:
        return
    names = result_variants(results)
    if baseline not in names:
        raise UsageError(f"--baseline `{baseline}` is not a variant of {results}."
                         f"{did_you_mean(baseline, names)} Variants: {', '.join(names)}")


def pipe_safe(command: Callable[[], int]) -> int:
    """Run ``command``; if the reader of stdout went away (``kaleibench list | head``), stop
    quietly with the shell's SIGPIPE exit code instead of a traceback."""
    try:
        code = command()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python would flush stdout again at exit and fail again: point it at /dev/null
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141


def version() -> str:
    """The installed package version."""
    from importlib import metadata

    try:
        return metadata.version("kaleibench")
    except metadata.PackageNotFoundError:
        from kaleibench import __version__

        return __version__
