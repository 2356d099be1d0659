"""The numerics fingerprint: what decides whether two runs can be bit-identical.

Two runs of the same config and seed give the same floats only when the same machine code does
the same arithmetic in the same order. That depends on more than the platform string or the
package versions: PyTorch and OpenBLAS pick their kernels at run time from the CPU's instruction
set (an AVX-512 Xeon and an AVX2 EPYC round matrix products differently), and the number of
compute threads changes reduction orders; and a machine where kaleibench's own C kernels cannot
be built (see :mod:`kaleibench.utils.native`) runs the GRU's torch implementation, which rounds
differently. The fingerprint records exactly these facts; the regression check compares scores
bit for bit only between runs whose fingerprints are equal, and falls back to a statistical rule
otherwise.

The code itself enters through :data:`ARITHMETIC`: a change that keeps the maths but moves the
rounding of any training computation (e.g. a product computed in another grouping, a value
computed once and reused) makes runs of the new code differ in the last bits from those of the
old one on every CPU. Such a change bumps the revision, so that references made before it are
compared statistically everywhere instead of failing as "changed" on their own CPU.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

from kaleibench.config import stable_hash

ARITHMETIC = 5
"""Revision of the training code's floating-point arithmetic (see the module docstring).
1: until the QMIX family's target Q-values were reused between target syncs and its agents
acted through the learner's GRU step; 2: until QMIX's mixer ran as one node with its mixing
arithmetic in C and the learner's large products through oneDNN; 3: until the GRU's recurrent
products, the learner's weight gradients and the agent's dense layers' backward products were
computed in C (``fma_gemm.h``); 4: until the C kernels' exp (GRU gates, the mixer's ELU) and the
GRU's state update used fused multiply-adds (``exp_poly.h``); 5: since."""

ISA_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw",
    "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
    "amx_bf16", "amx_int8", "asimd", "sve", "sve2",
)  # fmt: skip
"""Instruction-set extensions that BLAS/oneDNN/PyTorch kernels dispatch on (x86 and Arm)."""


@lru_cache(maxsize=1)
def cpu_facts(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """Vendor, model name, family/model/stepping and dispatch-relevant ISA flags of CPU 0."""
    facts: dict[str, Any] = {"machine": platform.machine(), "processor": platform.processor()}
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return facts
    first = text.split("\n\n", 1)[0]
    fields: dict[str, str] = {}
    for line in first.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    for key in ("vendor_id", "model name", "cpu family", "model", "stepping", "CPU implementer",
                "CPU part"):
        if key in fields:
            facts[key.replace(" ", "_")] = fields[key]
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    facts["isa"] = [f for f in ISA_FLAGS if f in flags]
    return facts


def library_facts() -> dict[str, Any]:
    """Kernel choices and thread counts of torch and numpy's BLAS, as this process sees them."""
    import numpy as np
    import torch

    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "numpy": np.__version__,
    }
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # threadpoolctl cannot inspect every build; record that instead
        blas = []
    facts["blas"] = [
        {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for i in blas
    ]
    env = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
           "ATEN_CPU_CAPABILITY")  # fmt: skip
    facts["env"] = {k: os.environ[k] for k in env if k in os.environ}
    return facts


def numerics_fingerprint() -> dict[str, Any]:
    """``{"cpu": ..., "libraries": ..., "hash": ...}``; equal hashes mean bit-equal runs are
    expected for equal configs, code and seeds (different hashes mean they are not)."""
    from kaleibench.nn import native_gru, native_mix
    from kaleibench.nn.products import product_facts
    from kaleibench.utils.native import native_facts

    facts: dict[str, Any] = {"cpu": cpu_facts(), "libraries": library_facts()}
    if ARITHMETIC > 1:  # revision 1 predates the field: its references keep their hashes
        facts["arithmetic"] = ARITHMETIC
    fallback = {**native_facts(native_gru.SOURCE), **native_facts(native_mix.SOURCE),
                **product_facts()}
    if fallback:  # some C kernels could not run here (and which library computes the products)
        facts["native"] = fallback
    return {**facts, "hash": stable_hash(facts, length=12)}
