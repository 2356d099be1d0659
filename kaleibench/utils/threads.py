"""One compute thread per run: torch's intra-op pool and numpy's BLAS.

Runs are parallelised across processes (the harness's workers), so each process computes on one
thread: on 2 cores, extra threads only contend, and the learner's small matrices gain nothing.
"""

from __future__ import annotations

import torch


def use_one_thread() -> None:
    """Limit torch and the BLAS libraries loaded so far (numpy's OpenBLAS) to one thread."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")
