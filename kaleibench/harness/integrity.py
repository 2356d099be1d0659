"""Checksums of the files a run later trusts, recorded at write time and verified at read time.

``torch.load`` does not check the zip CRCs of a ``.pt`` file and JSON has no checksum, so a
flipped byte in a checkpoint or a policy would otherwise be loaded as if it were good. Two kinds
of seal are used:

- the checkpoint carries a SHA-256 of its own payload (every tensor's dtype, shape and bytes and
  every plain value) under the key ``sha256``; it is self-contained, so an atomic rename of the
  checkpoint never leaves it out of step with a separate file;
- a completed run's ``status.json`` records the SHA-256 of the bytes of ``final.json``,
  ``final.pt``, ``best.pt`` and ``metrics.jsonl`` (key ``sha256``), written after those files and
  before the run is declared completed.

Policy files may be left out of a kept results folder (:data:`POLICY_FILES`); the other sealed
files may not. A mismatch raises :class:`CorruptFileError`, which names the file, the expected
and the found digest; callers never use the file's content after that.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

SEAL_KEY = "sha256"
"""Key of the digest in a sealed checkpoint payload and in a completed run's status.json."""

SEALED_FILES = ("final.json", "final.pt", "best.pt", "metrics.jsonl")
"""Files of a completed run whose digest status.json records (best.pt only if it exists)."""

POLICY_FILES = ("final.pt", "best.pt")
"""The sealed files a run's scores do not depend on: a results folder may be kept without them
(scores and logs only, e.g. committed results). Absent, they are not a defect; present, they
must match."""


class CorruptFileError(ValueError):
    """A file failed its integrity check (or cannot be read at all); the message names it."""

    def __init__(self, path: str | Path, problem: str, expected: str | None = None,
                 found: str | None = None) -> None:
        self.path, self.problem, self.expected, self.found = Path(path), problem, expected, found
        detail = f" (expected sha256 {expected}, found {found})" if expected or found else ""
        super().__init__(f"{path}: {problem}{detail}")


def sha256_file(path: str | Path, limit: int | None = None) -> str:
    """Hex SHA-256 of a file's bytes (only the first ``limit`` bytes if given)."""
    h = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as fh:
        while remaining is None or remaining > 0:
            chunk = fh.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return h.hexdigest()


def payload_digest(obj: Any) -> str:
    """Hex SHA-256 of a nested payload of dicts, lists, tensors and plain values.

    Computed from the values, not from the pickle bytes, so the digest of what ``torch.save``
    was given equals the digest of what ``torch.load`` returns when the file is intact (lists
    and tuples hash alike, dict keys are hashed in sorted order).
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    import torch

    if isinstance(obj, dict):
        h.update(b"{%d;" % len(obj))
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, list | tuple):
        h.update(b"[%d;" % len(obj))
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)};".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy())
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def seal(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` plus its digest under :data:`SEAL_KEY` (for ``torch.save``)."""
    return {**payload, SEAL_KEY: payload_digest(payload)}


def load_sealed(path: str | Path) -> dict[str, Any]:
    """Load a sealed ``.pt`` payload (weights only) and verify it; the digest key is removed.

    Raises:
        CorruptFileError: If the file cannot be loaded, is not a sealed mapping, or its
            content does not match the digest recorded in it.
    """
    import torch

    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    # A damaged .pt raises many types (RuntimeError, EOFError, UnpicklingError, BadZipFile...).
    except Exception as exc:  # noqa: BLE001
        raise CorruptFileError(path, f"unreadable ({_load_error(exc)})") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get(SEAL_KEY), str):
        raise CorruptFileError(path, "carries no checksum (written by an older version?)")
    expected = payload.pop(SEAL_KEY)
    found = payload_digest(payload)
    if found != expected:
        raise CorruptFileError(path, "checksum mismatch", expected, found)
    return payload


def _load_error(exc: Exception) -> str:
    """A one-line reason; torch's advice to retry without ``weights_only`` is never passed on
    (such a file holds more than tensors and plain values and must not be unpickled)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or truncated file"
    if "weights_only" in str(exc) or "Weights only" in text:
        text = "refused by the weights-only loader: it holds more than tensors and plain values"
    return f"{type(exc).__name__}: {text[:200]}"


def file_digests(run_dir: Path) -> dict[str, str]:
    """Digests of a finished run's sealed files that exist (recorded in status.json)."""
    return {name: sha256_file(run_dir / name) for name in SEALED_FILES
            if (run_dir / name).is_file()}


def verify_kept_files(run_dir: Path, status: dict[str, Any]) -> None:
    """:func:`verify_files` for a run whose policies may have been left out: final.json and
    metrics.jsonl must be there and match; each policy file must match if it is there."""
    kept = tuple(n for n in SEALED_FILES if n not in POLICY_FILES or (run_dir / n).is_file())
    verify_files(run_dir, status, kept)


def verify_files(run_dir: Path, status: dict[str, Any],
                 names: tuple[str, ...] = SEALED_FILES) -> None:
    """Check the files a completed run's status.json has digests for.

    A status without digests (a run completed by an older version) passes: there is nothing
    to check against. A recorded file that is missing counts as corrupt.

    Raises:
        CorruptFileError: Naming the first file that is missing or does not match.
    """
    digests = status.get(SEAL_KEY)
    if digests is None:
        return
    if not isinstance(digests, dict):
        raise CorruptFileError(run_dir / "status.json", f"`{SEAL_KEY}` is not a mapping")
    for name in names:
        expected = digests.get(name)
        if expected is None:
            continue
        path = run_dir / name
        if not path.is_file():
            raise CorruptFileError(path, "missing (status.json records its checksum)")
        found = sha256_file(path)
        if found != expected:
            raise CorruptFileError(path, "checksum mismatch", str(expected), found)
