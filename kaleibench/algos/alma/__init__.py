"""ALMA-alloc and ALMA+MINE, split by concern.

* :mod:`.config`: the configuration dataclasses;
* :mod:`.batch`: allocation ↔ entity-view plumbing, decision points, recency-filtered sampling;
* :mod:`.low_level`: subtask-masked agents, per-subtask mixer, TD loss;
* :mod:`.high_level`: amortized Q-learning of the allocation policy and critic;
* :mod:`.acting`: propose / score / pick / explore at a decision point;
* :mod:`.learner`: :class:`Alma`, which composes them; :mod:`.mine`: :class:`AlmaMine`.
"""

from kaleibench.algos.alma.config import AlmaConfig, AlmaMineConfig, QLearningConfig
from kaleibench.algos.alma.learner import Alma
from kaleibench.algos.alma.mine import AlmaMine

__all__ = ["Alma", "AlmaConfig", "AlmaMine", "AlmaMineConfig", "QLearningConfig"]
