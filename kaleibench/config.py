"""Frozen-dataclass configs: defaults in Python, YAML only overrides, strictly validated."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, TypeVar

from kaleibench.registry import did_you_mean

C = TypeVar("C")


class ConfigError(ValueError):
    """Bad user configuration; the message names the file and the key."""


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """Check a YAML value against the type of the field's default (int→float is allowed)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: `{key}` must be true/false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, float) and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: `{key}` must be a finite number, got {value!r}")
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if not isinstance(value, type(default)):
        raise ConfigError(
            f"{source}: `{key}` must be {type(default).__name__}, got {type(value).__name__} "
            f"({value!r})"
        )
    return value


def from_overrides(cls: type[C], overrides: dict[str, Any], source: str) -> C:
    """Build ``cls`` from its defaults plus ``overrides``; unknown keys raise "did you mean"."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown key `{key}` for {cls.__name__}."
                f"{did_you_mean(key, list(fields))}"
            )
        field = fields[key]
        default = field.default if field.default is not dataclasses.MISSING else None
        if default is None and "bool" in str(field.type) and value is not None:
            default = False  # an optional switch (None = decided elsewhere): true/false only
        kwargs[key] = _coerce(value, default, key, source)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def stable_hash(obj: Any, length: int = 10) -> str:
    """A short content hash of a JSON-serialisable object (key order independent).

    Examples:
        >>> stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
        True
    """
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping; syntax errors raise ``ConfigError`` with the file and line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} malformed YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data
