"""Suite files (``suites/*.yaml``): which grid to run; defaults live in the dataclasses."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaleibench.config import ConfigError, load_yaml, stable_hash
from kaleibench.overrides import VariantRequest, check_unique, parse_variant_entries
from kaleibench.paths import data_dir
from kaleibench.registry import UnknownIdError, did_you_mean

_SUITE_KEYS = ("name", "version", "description", "tasks", "variants", "seeds", "t_max", "n_envs",
               "eval_interval", "eval_episodes", "log_interval", "checkpoint_interval", "backend",
               "compare")
_TASK_KEYS = ("id", "bounds")
_COMPARE_KEYS = ("a", "b")


@dataclass(frozen=True)
class SuiteTask:
    """A task of a suite with its fixed normalisation bounds."""

    id: str
    random: float
    reference: float


@dataclass(frozen=True)
class Suite:
    """A validated suite."""

    name: str
    version: int
    tasks: tuple[SuiteTask, ...]
    variants: tuple[str | VariantRequest, ...]
    """Variant ids or YAML paths, or requests with overrides (:mod:`kaleibench.overrides`)."""
    seeds: tuple[int, ...]
    t_max: int
    n_envs: int = 8
    eval_interval: int = 10_000
    eval_episodes: int = 32
    log_interval: int = 2_000
    checkpoint_interval: int = 50_000
    backend: str = "numpy"
    description: str = ""
    source: str = ""
    compare: tuple[str, str] | None = None
    """The comparison the suite exists for, ``(a, b)``: variant names or sweep bases; reports
    open with a headline on it (:mod:`kaleibench.analysis.headline`)."""

    def to_json(self) -> dict[str, Any]:
        """The suite.json written next to a suite's runs. The hash covers the grid; ``compare``
        (only written when declared) is how to read the results, not what they are, so it stays
        out of the hash and a suite's hash is the same with or without it."""
        body = {
            "name": self.name, "version": self.version,
            "tasks": [{"id": t.id, "bounds": {"random": t.random, "reference": t.reference}}
                      for t in self.tasks],
            "variants": [v if isinstance(v, str) else v.name for v in self.variants],
            "seeds": list(self.seeds), "t_max": self.t_max,
            "n_envs": self.n_envs, "eval_interval": self.eval_interval,
            "eval_episodes": self.eval_episodes,
        }
        out = {**body, "hash": stable_hash(body)}
        if self.compare is not None:
            out["compare"] = {"a": self.compare[0], "b": self.compare[1]}
        return out


def _check_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key `{key}`.{did_you_mean(key, list(allowed))}")


def _int(data: dict[str, Any], key: str, where: str, minimum: int = 1) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: `{key}` must be an integer >= {minimum}, got {value!r}")
    return value


def safe_name(value: Any, where: str, key: str) -> str:
    """A name used as one folder of the results layout: a single, non-empty path component
    (no ``/`` or ``\\``, not ``.`` or ``..``, no NUL, not hidden), so no name writes outside
    its results folder or breaks the layout."""
    name = value if isinstance(value, str) else None
    if (not name or name in (".", "..") or name.startswith(".") or name != name.strip()
            or any(c in name for c in "/\\\0") or len(name) > 200):
        raise ConfigError(f"{where}: `{key}` must be a plain folder name (letters, digits, "
                          f"'-', '_'; no '/', not empty, not starting with '.'), got {value!r}")
    return name


def no_duplicates(values: Sequence[Any], where: str, key: str) -> None:
    """Refuse repeated entries: two cells would write one run folder at once."""
    repeated = sorted({str(v) for v, n in Counter(values).items() if n > 1})
    if repeated:
        raise ConfigError(f"{where}: `{key}` lists {', '.join(repeated)} more than once")


def _bound(bounds: dict[str, Any], key: str, task: str, where: str) -> float:
    value = bounds[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: task {task}: `bounds.{key}` must be a finite number, "
                          f"got {value!r}")
    return float(value)


def _parse_task(item: Any, where: str) -> SuiteTask:
    from kaleibench.envs import tasks

    if not isinstance(item, dict) or "id" not in item:
        raise ConfigError(f"{where}: each task needs `id:` and `bounds: {{random, reference}}`")
    _check_keys(item, _TASK_KEYS, where)
    try:
        tasks.get(item["id"])
    except UnknownIdError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    bounds = item.get("bounds") or _measured_bounds(item["id"])
    if not isinstance(bounds, dict) or set(bounds) != {"random", "reference"}:
        raise ConfigError(f"{where}: task {item['id']} needs bounds: {{random: x, reference: y}}")
    lo, hi = (_bound(bounds, k, item["id"], where) for k in ("random", "reference"))
    if hi <= lo:
        raise ConfigError(f"{where}: task {item['id']}: reference bound must exceed random bound")
    return SuiteTask(item["id"], lo, hi)


def _measured_bounds(task_id: str) -> dict[str, float]:
    """The task table's bounds, used when a suite task gives none (empty if not measured)."""
    from kaleibench.envs.tasks import task_bounds

    measured = task_bounds(task_id)
    return {} if measured is None else {"random": measured[0], "reference": measured[1]}


def _parse_compare(value: Any, names: Sequence[str | VariantRequest],
                   source: str) -> tuple[str, str]:
    """``compare: {a: X, b: Y}``: X and Y must each name a variant entry of the suite (an id,
    or the base variant of a ``set``/``sweep`` entry) and differ."""
    if not isinstance(value, dict) or set(value) - set(_COMPARE_KEYS) or len(value) != 2:
        if isinstance(value, dict):
            _check_keys(value, _COMPARE_KEYS, f"{source}: compare")
        raise ConfigError(f"{source}: `compare` must be a mapping {{a: <variant>, b: <variant>}}, "
                          f"got {value!r}")
    bases = [e.base if isinstance(e, VariantRequest) else e for e in names]
    bases = [Path(b).stem if b.endswith((".yaml", ".yml")) else b for b in bases]
    sides = []
    for key in _COMPARE_KEYS:
        side = value[key]
        if not isinstance(side, str) or side not in bases:
            raise ConfigError(f"{source}: `compare.{key}` must name one of the suite's variants "
                              f"{sorted(set(bases))}, got {side!r}."
                              f"{did_you_mean(str(side), sorted(set(bases)))}")
        sides.append(side)
    if sides[0] == sides[1]:
        raise ConfigError(f"{source}: `compare` needs two different variants, got {sides[0]!r}")
    return sides[0], sides[1]


def parse_suite(data: dict[str, Any], source: str) -> Suite:
    """Validate a suite mapping; every error names the file and key."""
    from kaleibench.algos import variants

    _check_keys(data, _SUITE_KEYS, source)
    for key in ("name", "tasks", "variants", "seeds", "t_max"):
        if key not in data:
            raise ConfigError(f"{source}: missing `{key}`")
    name = safe_name(data["name"], source, "name")
    for key in ("tasks", "variants"):
        if not isinstance(data[key], list) or not data[key]:
            raise ConfigError(f"{source}: `{key}` must be a non-empty list, got {data[key]!r}")
    suite_tasks = tuple(_parse_task(t, source) for t in data["tasks"])
    no_duplicates([t.id for t in suite_tasks], source, "tasks")
    names = parse_variant_entries(data["variants"], source)
    no_duplicates([e for e in names if isinstance(e, str)], source, "variants")
    check_unique([e for e in names if isinstance(e, VariantRequest)])  # same resolved name
    for entry in names:
        v = entry.base if isinstance(entry, VariantRequest) else entry
        if not v.endswith((".yaml", ".yml")) and v not in variants:
            raise ConfigError(
                f"{source}: unknown variant `{v}`.{did_you_mean(v, variants.names())}")
    if any(isinstance(entry, VariantRequest) for entry in names):
        check_unique(names)  # validates every override now, before anything runs
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"{source}: `seeds` must be a non-empty list of integers >= 0")
    no_duplicates(seeds, source, "seeds")
    backend = data.get("backend", "numpy")
    from kaleibench.envs import BACKENDS

    if backend not in BACKENDS:
        raise ConfigError(f"{source}: `backend` must be one of {', '.join(BACKENDS)}, "
                          f"got {backend!r}")
    compare = _parse_compare(data["compare"], names, source) if "compare" in data else None
    extra = {k: _int(data, k, source) for k in (
        "n_envs", "eval_interval", "eval_episodes", "log_interval", "checkpoint_interval")
        if k in data}
    return Suite(
        name=name, version=_int(data, "version", source, 0) if "version" in data
        else 0, tasks=suite_tasks, variants=tuple(names), seeds=tuple(seeds),
        t_max=_int(data, "t_max", source), backend=backend,
        description=str(data.get("description", "")), source=source, compare=compare, **extra)


def suite_names() -> list[str]:
    """Built-in suites."""
    return sorted(p.stem for p in data_dir("suites").glob("*.yaml"))


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite name, or a path to a suite YAML."""
    path = Path(name_or_path)
    if not name_or_path.endswith((".yaml", ".yml")):
        path = data_dir("suites") / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown suite `{name_or_path}`.{did_you_mean(name_or_path, suite_names())}")
    return parse_suite(load_yaml(path), str(path))
