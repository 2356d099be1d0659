"""Small C kernels compiled on first use and loaded with ctypes (no build step at install).

Why: a few of the learner's inner loops (the GRU's gate arithmetic per time step) cost more in
per-call overhead of torch/numpy's small element-wise operations than in arithmetic. A plain C
loop over a whole step removes that overhead; it needs no PyTorch headers, so it compiles in
well under a second with the system's C compiler.

How:
* the source is compiled with ``$CC`` (else ``cc``, ``gcc`` or ``clang``) and
  :data:`FLAGS` into a per-user cache (``$KALEIBENCH_CACHE``, default
  ``~/.cache/kaleibench``), under a key that hashes the source, the compiler's version line,
  the flags and the CPU's dispatch-relevant features: a changed input builds a new library;
* the library is written to a temporary file and renamed into place, so parallel workers that
  compile at the same time never load a half-written file;
* without a compiler, or when compiling fails, :func:`load` returns None and says why once; the
  callers then use their torch implementation of the same function (slower, other rounding).
  ``KALEIBENCH_NATIVE=0`` forces that path.

When a library cannot be used, the numerics fingerprint says so (:func:`native_facts`): runs
made with and without the C kernels are not expected to be bit-identical. When it is used the
fingerprint is unchanged: its results depend only on the source (see :data:`FLAGS`), and a
change of source is a change of code, which the regression check's exact mode reports.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-std=c99", "-ffp-contract=off", "-fopenmp-simd",
         "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")  # fmt: skip
"""Optimised and vectorised for this CPU, but plain IEEE arithmetic: no ``-ffast-math`` (no
reassociation) and no implicit contraction of ``a * b + c`` into fused multiply-adds; the matrix
products' fused multiply-adds are written out (``fma_gemm.h``: intrinsics, or ``fmaf``), one
correctly rounded operation each. Every lane then computes the same correctly rounded operations
in the order written, so the kernels' results do not depend on the vector width, the instruction
set or the compiler."""
DISABLE_ENV = "KALEIBENCH_NATIVE"
"""Set to ``0`` to never build or load C kernels (the torch paths run instead)."""
CACHE_ENV = "KALEIBENCH_CACHE"
"""Overrides the cache folder of compiled kernels (default ``~/.cache/kaleibench``)."""

_UNAVAILABLE: dict[str, str] = {}
"""Source name -> why its library could not be loaded (each reason is logged once)."""


def disabled() -> bool:
    """Whether ``KALEIBENCH_NATIVE=0`` (or ``false``/``no``/``off``) asks for the torch paths."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "false", "no", "off")


def compiler() -> str | None:
    """Path of the C compiler to use: ``$CC``, else the first of cc, gcc, clang on PATH."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


@lru_cache(maxsize=8)
def compiler_version(cc: str) -> str:
    """The first line of ``cc --version`` ('' if it cannot be run)."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.splitlines()[0].strip() if out else ""


def cache_dir() -> Path:
    """Folder of compiled kernels."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "kaleibench"


def build_key(source: str, cc_version: str) -> str:
    """Hash of everything the compiled library depends on."""
    from kaleibench.utils.fingerprint import cpu_facts

    cpu = cpu_facts()
    parts = [source, cc_version, " ".join(FLAGS), str(cpu.get("model_name")), " ".join(cpu.get(
        "isa", [])), str(cpu.get("machine"))]  # fmt: skip
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def source_text(path: Path) -> str:
    """The C file's text followed by the text of each local header it includes
    (``#include "name.h"``, looked up beside it): everything its build depends on."""
    text = path.read_text()
    headers = re.findall(r'^\s*#\s*include\s*"([^"]+)"', text, flags=re.MULTILINE)
    return "\n".join([text, *((path.parent / h).read_text() for h in headers)])


def _compile(cc: str, source_path: Path, target: Path) -> None:
    """Compile ``source_path`` into ``target`` atomically; raises RuntimeError on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *FLAGS, "-o", tmp, str(source_path)], capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(cc).name} failed on {source_path.name}: "
                               f"{(proc.stderr or proc.stdout).strip()[:2000]}")  # fmt: skip
        os.replace(tmp, target)  # atomic: a concurrent loader sees the old file or the new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@lru_cache(maxsize=8)
def load(source_path: str) -> ctypes.CDLL | None:
    """The C file at ``source_path`` compiled for this machine and loaded; None (with the reason
    in :func:`unavailable_reason`) if disabled, without a compiler, or if compiling fails."""
    path = Path(source_path)
    reason = None
    lib = None
    if disabled():
        reason = f"{DISABLE_ENV}={os.environ.get(DISABLE_ENV)}"
    elif (cc := compiler()) is None:
        reason = "no C compiler found (set CC, or install gcc or clang)"
    else:
        key = build_key(source_text(path), compiler_version(cc))
        target = cache_dir() / "native" / f"{path.stem}-{key}.so"
        try:
            if not target.is_file():
                _compile(cc, path, target)
            try:
                lib = ctypes.CDLL(str(target))
            except OSError:  # a damaged cached library: build it again, once
                _compile(cc, path, target)
                lib = ctypes.CDLL(str(target))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            reason = f"could not build or load {target}: {exc}"
    if lib is None:
        _UNAVAILABLE[path.name] = str(reason)
        log.warning("C kernels of %s unavailable (%s); using the torch implementation (slower, "
                    "other rounding)", path.name, reason)  # fmt: skip
    return lib


P, I64, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
"""ctypes argument types of the kernels: pointer, int64_t, int."""
Signatures = dict[str, tuple[list[Any], Any]]
"""Function name -> (argument types, return type or None for void)."""
_DECLARED: dict[int, ctypes.CDLL] = {}  # libraries whose functions are declared, by id


def load_declared(source_path: str, signatures: Signatures) -> ctypes.CDLL | None:
    """:func:`load`, with the argument and return types of the functions in ``signatures``
    declared once per loaded library (ctypes then converts and checks every call's
    arguments)."""
    lib = load(source_path)
    if lib is not None and id(lib) not in _DECLARED:
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, restype
        _DECLARED[id(lib)] = lib  # holding the library keeps its id from being reused
    return lib


def unavailable_reason(source_name: str) -> str | None:
    """Why the library of ``source_name`` (e.g. ``gru_kernels.c``) was not loaded, if tried."""
    return _UNAVAILABLE.get(source_name)


def native_facts(source_path: str) -> dict[str, Any]:
    """For the numerics fingerprint: ``{}`` when the C kernels of ``source_path`` run here,
    ``{"<source name>": "unavailable"}`` when the torch implementation runs instead."""
    if load(source_path) is not None:
        return {}
    return {Path(source_path).name: "unavailable"}
