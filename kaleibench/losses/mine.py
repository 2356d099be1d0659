"""The Jensen-Shannon MINE estimator as pure functions.

MINE: Belghazi et al., "Mutual Information Neural Estimation", ICML 2018, arXiv 1801.04062; the
Jensen-Shannon Fenchel-dual form follows Hjelm et al. (Deep InfoMax, arXiv 1808.06670), the form
RACE (Li et al., ICML 2023) uses. Shapes: M paired samples, D width.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

LOG2 = math.log(2.0)


def jsd_positive(p: torch.Tensor) -> torch.Tensor:
    """E_P term of the JSD Fenchel dual: ``log 2 − softplus(−p)``."""
    return LOG2 - F.softplus(-p)


def jsd_negative(q: torch.Tensor) -> torch.Tensor:
    """E_Q term of the JSD Fenchel dual: ``softplus(−q) + q − log 2`` (= softplus(q) − log 2)."""
    return F.softplus(-q) + q - LOG2


def fenchel_dual_loss(local: torch.Tensor, glob: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """JSD MINE loss over M paired samples; pairs (i, i) are joint, (i, j≠i) are marginal.

    ``u_ij = ⟨g_i, l_j⟩``, ``L_i = Σ_{j≠i} (softplus(u_ij) − log 2) / (M − 1) − (log 2 −
    softplus(−u_ii))``. Minimising L maximises the JSD lower bound ``E_pos − E_neg = −L`` on
    I(l; g) (up to the constant 2 log 2 and a monotone map).

    Args:
        local: (M, D) embeddings of one side; glob: (M, D) of the other; M ≥ 2.

    Returns:
        (loss (M,), positive-pair term E_pos (M,)); the MI estimate of row i is ``−loss_i``.
    """
    m = local.shape[0]
    if m < 2:
        raise ValueError("the Fenchel-dual loss needs at least 2 samples")
    u = glob @ local.t()  # (M, M)
    eye = torch.eye(m, dtype=torch.bool)
    e_pos = jsd_positive(u.diagonal())  # (M,)
    e_neg = jsd_negative(u).masked_fill(eye, 0.0).sum(1) / (m - 1)  # (M,)
    return e_neg - e_pos, e_pos
