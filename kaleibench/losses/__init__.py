"""Loss terms as pure functions, one module per family.

* :mod:`kaleibench.losses.q_learning`: TD targets, masked TD loss, reward standardisation
  (QMIX and its variants, and ALMA's low level);
* :mod:`kaleibench.losses.alma`: ALMA's amortized Q-learning of the allocation;
* :mod:`kaleibench.losses.mine`: the Jensen-Shannon MINE estimator;
* :mod:`kaleibench.losses.native_td`: C versions of the double-Q selection and the logged loss
  statistics (same values, one call each).

``from kaleibench.losses import ...`` works for every public name of the three modules.
"""

from kaleibench.losses.alma import (
    MetaBatch,
    alloc_critic_loss,
    alloc_td_targets,
    amortisation_loss,
    decay_weights,
    make_meta_batch,
)
from kaleibench.losses.mine import LOG2, fenchel_dual_loss, jsd_negative, jsd_positive
from kaleibench.losses.q_learning import (
    UNAVAILABLE,
    RunningMeanStd,
    double_q_next_values,
    lambda_targets,
    masked_td_loss,
    masked_td_loss_and_gradient,
    return_bound,
    taken_action_gradient,
    taken_action_values,
    td_targets,
)

__all__ = [
    "LOG2", "UNAVAILABLE", "MetaBatch", "RunningMeanStd", "alloc_critic_loss", "alloc_td_targets",
    "amortisation_loss", "decay_weights", "double_q_next_values", "fenchel_dual_loss",
    "jsd_negative", "jsd_positive", "lambda_targets", "make_meta_batch", "masked_td_loss",
    "masked_td_loss_and_gradient", "return_bound", "taken_action_gradient",
    "taken_action_values", "td_targets",
]
