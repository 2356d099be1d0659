"""Suite × overrides -> RunSpecs (the grid), with N/A cells for unsupported pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kaleibench.algos import Variant, load_variant
from kaleibench.config import ConfigError
from kaleibench.envs import task_spec
from kaleibench.harness.suite import Suite, no_duplicates, safe_name
from kaleibench.overrides import resolve
from kaleibench.train.spec import RunSpec


@dataclass(frozen=True)
class Cell:
    """One grid cell: a runnable spec, or a reason why the variant cannot run on the task."""

    spec: RunSpec
    na_reason: str | None = None


def expand(suite: Suite, variants: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
           seeds: Sequence[int] | None = None) -> list[Cell]:
    """All cells of ``suite`` (optionally restricted/overridden), in a stable order.

    Raises:
        ConfigError: On a repeated variant, task or seed, on a variant whose name is not a
            plain folder name, or on a variant file that cannot be loaded (naming the file).
    """
    where = "command line" if variants else suite.source or suite.name
    chosen: list[Variant] = [_load(v, where) if isinstance(v, str) else resolve(v)
                             for v in (variants or suite.variants)]
    no_duplicates([v.name for v in chosen], where, "variants (names)")
    task_ids = list(tasks or [t.id for t in suite.tasks])
    no_duplicates(task_ids, "command line" if tasks else where, "tasks")
    if seeds is not None:
        no_duplicates(list(seeds), "command line", "seeds")
    cells = []
    for variant in chosen:
        for task_id in task_ids:
            spec_t = task_spec(task_id)
            for seed in seeds if seeds is not None else suite.seeds:
                spec = RunSpec(
                    suite=suite.name, variant=variant, task=task_id, seed=seed,
                    t_max=suite.t_max, n_envs=suite.n_envs, eval_interval=suite.eval_interval,
                    eval_episodes=suite.eval_episodes, log_interval=suite.log_interval,
                    checkpoint_interval=suite.checkpoint_interval, backend=suite.backend)
                reason = None
                if variant.needs_subtasks and not spec_t.has_subtasks:
                    reason = f"{variant.name} needs subtasks; {task_id} has none"
                cells.append(Cell(spec, reason))
    return cells


def _load(name_or_path: str, where: str) -> Variant:
    """A variant, with every failure an error naming the file (``algo: os:system`` names a
    callable without a ``Config``, for example) and a name that is safe as a folder."""
    try:
        variant = load_variant(name_or_path)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin or YAML can fail in any way
        raise ConfigError(f"{name_or_path}: cannot load the variant{_algo_of(name_or_path)} "
                          f"({type(exc).__name__}: {exc})") from exc
    safe_name(variant.name, variant.source or where, "name")
    return variant


def _algo_of(name_or_path: str) -> str:
    """`` (`algo: x`)`` of a variant YAML, to name the key that most often fails to load."""
    from kaleibench.config import load_yaml

    if not name_or_path.endswith((".yaml", ".yml")):
        return ""
    try:
        return f" (`algo: {load_yaml(name_or_path).get('algo')}`)"
    except Exception:  # noqa: BLE001 - only decorates an error message
        return ""
