"""The variant registry: an algorithm class + a frozen config, named by a YAML in ``baselines/``.

A variant YAML::

    algo: kaleibench.algos.qmix:Qmix     # or a plugin's "pkg.mod:Class"
    description: one line
    config: {hidden_dim: 64}              # overrides of the class's Config dataclass

Plugins may also register variants through the ``kaleibench.variants`` entry-point group; each
entry point names a YAML path string, or a dict of the same form as the YAML.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from kaleibench.algos.base import Algorithm, EnvInfo, resolve_timeout_is_terminal
from kaleibench.config import ConfigError, from_overrides, load_yaml, stable_hash, to_dict
from kaleibench.envs.base import TaskSpec
from kaleibench.paths import data_dir
from kaleibench.registry import Registry, load_entry_point

__all__ = ["Variant", "load_variant", "variants"]


@dataclass(frozen=True)
class Variant:
    """A named, fully resolved variant: algorithm class path and frozen config."""

    name: str
    algo: str
    config: Any
    description: str = ""
    source: str = ""
    base: str = ""
    """For a variant derived by config overrides (``qmix+lr=0.001``): the variant it derives
    from; empty otherwise (see :mod:`kaleibench.overrides`)."""
    overrides: tuple[tuple[str, Any], ...] = ()
    """The overridden config fields of a derived variant, sorted by key (empty otherwise)."""

    @property
    def algo_class(self) -> Any:
        """The algorithm class (imported lazily)."""
        return load_entry_point(self.algo)

    @property
    def learns(self) -> bool:
        """Whether the variant trains (reference policies do not)."""
        return bool(getattr(self.algo_class, "learns", True))

    @property
    def needs_subtasks(self) -> bool:
        """Whether the variant can only run on tasks with subtasks."""
        return bool(getattr(self.algo_class, "needs_subtasks", False))

    def build(self, env_info: EnvInfo, seed: int) -> Algorithm:
        """Instantiate the learner for one task and root seed."""
        algo: Algorithm = self.algo_class(self.config, env_info, seed)
        return algo

    def for_task(self, task: TaskSpec) -> Variant:
        """This variant with the task-dependent config fields resolved for ``task``.

        Today that is the time-limit semantics (see
        :func:`~kaleibench.algos.base.resolve_timeout_is_terminal`).
        """
        config = resolve_timeout_is_terminal(self.config, task)
        return self if config is self.config else dataclasses.replace(self, config=config)

    def to_json(self) -> dict[str, Any]:
        """Resolved description stored in spec.json."""
        return {"name": self.name, "algo": self.algo, "config": to_dict(self.config)}

    @property
    def config_hash(self) -> str:
        """Hash of algorithm path + resolved config."""
        return stable_hash({"algo": self.algo, "config": to_dict(self.config)})


_KEYS = ("algo", "description", "config", "name")


def variant_from_mapping(data: dict[str, Any], name: str, source: str) -> Variant:
    """Validate a variant mapping (YAML or entry point) and resolve its config."""
    for key in data:
        if key not in _KEYS:
            from kaleibench.registry import did_you_mean

            raise ConfigError(f"{source}: unknown key `{key}`.{did_you_mean(key, list(_KEYS))}")
    if "algo" not in data:
        raise ConfigError(f"{source}: missing `algo: package.module:Class`")
    try:
        cls: Any = load_entry_point(str(data["algo"]))
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{source}: cannot import algo {data['algo']!r}: {exc}") from exc
    overrides = data.get("config") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{source}: `config` must be a mapping")
    config = from_overrides(cls.Config, overrides, source)
    return Variant(str(data.get("name", name)), str(data["algo"]), config,
                   str(data.get("description", "")), source)


def load_variant_file(path: str | Path) -> Variant:
    """A variant from a YAML file; its name is the ``name`` key or the file stem."""
    path = Path(path)
    return variant_from_mapping(load_yaml(path), path.stem, str(path))


variants: Registry[Variant | Path] = Registry("variant")


def _load_builtin(reg: Registry[Variant | Path]) -> None:
    for path in sorted(data_dir("baselines").glob("*.yaml")):
        reg.register(path.stem, path)


def _load_plugins(reg: Registry[Variant | Path]) -> None:
    for ep in metadata.entry_points(group="kaleibench.variants"):
        try:
            _register_plugin(reg, ep)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the CLI
            import sys

            print(f"kaleibench: warning: skipping plugin variant entry point "
                  f"`{ep.name} = {ep.value}` (kaleibench.variants): {type(exc).__name__}: {exc}",
                  file=sys.stderr)


def _register_plugin(reg: Registry[Variant | Path], ep: metadata.EntryPoint) -> None:
    obj = ep.load()
    if isinstance(obj, str | Path):
        reg.register(ep.name, Path(obj))
    elif isinstance(obj, dict):
        reg.register(ep.name, variant_from_mapping(obj, ep.name, f"entry point {ep.value}"))
    else:
        raise ConfigError(f"entry point {ep.name}: expected a YAML path or a mapping")


variants.add_loader(_load_builtin)
variants.add_loader(_load_plugins)


def load_variant(name_or_path: str) -> Variant:
    """A registered variant id, or a path to a variant YAML (anything ending in .yaml/.yml)."""
    if name_or_path.endswith((".yaml", ".yml")):
        return load_variant_file(name_or_path)
    entry = variants.get(name_or_path)
    return load_variant_file(entry) if isinstance(entry, Path) else entry
