"""Task registry: versioned ids -> :class:`TaskSpec`, and :func:`make`."""

from __future__ import annotations

from kaleibench.envs.base import BatchedTask, TaskSpec, TimeStep
from kaleibench.envs.tasks import ALL_TASKS
from kaleibench.registry import Registry

__all__ = ["BatchedTask", "TaskSpec", "TimeStep", "make", "task_spec", "tasks"]

tasks: Registry[TaskSpec] = Registry("task")
for _factory in ALL_TASKS:
    _spec = _factory()
    tasks.register(_spec.id, _spec)

BACKENDS = ("mpe2", "numpy")


def task_spec(task_id: str) -> TaskSpec:
    """The pinned spec of a registered task id (raises with "did you mean" if unknown)."""
    return tasks.get(task_id)


def make(task_id: str, n_envs: int = 1, seed: int = 0, backend: str = "numpy") -> BatchedTask:
    """Build ``n_envs`` batched copies of task ``task_id``.

    Args:
        task_id: a registered versioned id, e.g. ``"mpe/spread-v0"``.
        n_envs: batch rows B.
        seed: seeds the stream of episode seeds used when ``reset()`` gets none.
        backend: ``"mpe2"`` (one mpe2 parallel env per row, the reference) or ``"numpy"``
            (all rows stepped at once, transition-for-transition equal to ``"mpe2"``).
    """
    spec = task_spec(task_id)
    if backend == "mpe2":
        from kaleibench.envs.mpe import Mpe2Task

        return Mpe2Task(spec, n_envs=n_envs, seed=seed)
    if backend == "numpy":
        from kaleibench.envs.batched import NumpyTask

        return NumpyTask(spec, n_envs=n_envs, seed=seed)
    raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
