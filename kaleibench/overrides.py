"""Config overrides and sweeps of variants: ``--set lr=1e-3``, ``--sweep lr=1e-4,1e-3``.

An override changes fields of a variant's frozen config, with the same validation as a variant
YAML's ``config:`` keys (unknown keys raise with a "did you mean", values are type-checked). An
overridden variant is a new variant: its name is the base name followed by ``+key=value`` per
field in key order (``qmix+lr=0.001+td_lambda=0.6``), so it gets its own results folder, run id
and config hash, and reports show it under that name. The name is always one safe path component
(letters, digits and ``._+=,-``); a value that would not be safe, or a name that would be too
long, is replaced by a short content hash.

A sweep is a grid over one or more fields: the cartesian product of their values, each point
one overridden variant.

In a suite YAML, an entry of ``variants:`` is a variant id (or YAML path) or a mapping::

    variants:
      - qmix
      - {variant: qmix, set: {lr: 0.001}}
      - {variant: qmix, sweep: {lr: [0.0001, 0.001], td_lambda: [0.6, 0.8]}}
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kaleibench.config import ConfigError, from_overrides, stable_hash
from kaleibench.registry import did_you_mean

SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=,-]*$")
"""A variant name that is one portable path component (no globbing or shell characters)."""
MAX_NAME = 100
"""Longer derived names are shortened to ``<base>+<hash>``."""
_ENTRY_KEYS = ("variant", "set", "sweep")


@dataclass(frozen=True)
class VariantRequest:
    """A variant id or YAML path, with config overrides applied on top of it."""

    base: str
    overrides: tuple[tuple[str, Any], ...] = ()
    source: str = "command line"

    def load(self) -> Any:
        """The resolved :class:`~kaleibench.algos.Variant` (validated)."""
        from kaleibench.algos import load_variant

        variant = load_variant(self.base)
        return override_variant(variant, dict(self.overrides), self.source) if self.overrides \
            else variant

    @property
    def name(self) -> str:
        """The derived variant name (loads the base to format values by their field types)."""
        return str(self.load().name)


def resolve(entry: str | VariantRequest) -> Any:
    """A :class:`~kaleibench.algos.Variant` from a suite's variant entry."""
    if isinstance(entry, VariantRequest):
        return entry.load()
    from kaleibench.algos import load_variant

    return load_variant(entry)


def entry_name(entry: str | VariantRequest) -> str:
    """The results-folder name of a suite's variant entry."""
    return str(resolve(entry).name)


# ------------------------------------------------------------------ parsing user input
def parse_scalar(text: str) -> Any:
    """A command-line value as a YAML scalar; ``1e-3`` is a float (YAML 1.2 style).

    Examples:
        >>> [parse_scalar(s) for s in ("1e-3", "0.6", "64", "true", "gru", "null")]
        [0.001, 0.6, 64, True, 'gru', None]
    """
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        return _number_or_str(value)
    return value


def _number_or_str(text: str) -> Any:
    """``"1e-3"`` -> 0.001 (PyYAML reads exponents without a dot as strings); else ``text``."""
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)", text.strip()):
        return float(text)
    return text


def parse_assignments(items: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    """``["lr=1e-3", "td_lambda=0.6"]`` -> ``{"lr": 0.001, "td_lambda": 0.6}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, value = _split(item, flag)
        if key in out:
            raise ConfigError(f"{flag}: `{key}` given twice")
        out[key] = parse_scalar(value)
    return out


def parse_sweep(items: Sequence[str], flag: str = "--sweep") -> dict[str, list[Any]]:
    """``["lr=1e-4,1e-3"]`` -> ``{"lr": [0.0001, 0.001]}`` (comma-separated values)."""
    out: dict[str, list[Any]] = {}
    for item in items:
        key, value = _split(item, flag)
        if key in out:
            raise ConfigError(f"{flag}: `{key}` given twice")
        values = [parse_scalar(v) for v in value.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"{flag}: `{key}` has no values (write {key}=a,b,c)")
        out[key] = values
    return out


def _split(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{flag}: expected key=value, got {item!r}")
    return key, value.strip()


def sweep_points(sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of a sweep, in the given key and value order.

    Examples:
        >>> sweep_points({"lr": [1, 2], "gamma": [0.9]})
        [{'lr': 1, 'gamma': 0.9}, {'lr': 2, 'gamma': 0.9}]
    """
    keys = list(sweep)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(sweep[k] for k in keys))]


# ------------------------------------------------------------------ applying to a variant
def override_variant(variant: Any, overrides: dict[str, Any], source: str) -> Any:
    """``variant`` with ``overrides`` applied to its config, renamed ``<name>+k=v...``.

    Keys and values are validated exactly as a variant YAML's ``config:`` (unknown keys raise
    :class:`~kaleibench.config.ConfigError` with a "did you mean"; wrong types raise).
    Overriding an already overridden variant merges the overrides (the new ones win) and
    derives the name from the original base.
    """
    if not overrides:
        return variant
    config = variant.config
    cls = type(config)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    typed = {k: _typed(v, fields.get(k)) for k, v in overrides.items()}
    current = {name: getattr(config, name) for name in fields}
    # validate the override keys and values first, so that errors name the user's keys
    label = f"{source} (variant {getattr(variant, 'base', '') or variant.name})"
    for key in typed:
        if key not in fields:
            raise ConfigError(f"{label}: unknown key `{key}` for {cls.__name__}."
                              f"{did_you_mean(key, list(fields))}")
    new_config = from_overrides(cls, {**current, **typed}, label)
    merged = {**dict(getattr(variant, "overrides", ()) or ()),
              **{k: getattr(new_config, k) for k in typed}}
    base = getattr(variant, "base", "") or variant.name
    items = tuple(sorted(merged.items()))
    desc = variant.description or base
    return dataclasses.replace(
        variant, name=derived_name(base, items), config=new_config, base=base,
        overrides=tuple((k, _hashable(v)) for k, v in items),
        description=f"{desc} ({', '.join(f'{k}={format_value(v)}' for k, v in items)})")


def _typed(value: Any, field: dataclasses.Field[Any] | None) -> Any:
    """Read a string as a number when the field is numeric (``lr: 1e-3`` in YAML is a str)."""
    if field is None or not isinstance(value, str):
        return value
    default = field.default
    if isinstance(default, int | float) and not isinstance(default, bool):
        number = _number_or_str(value)
        if isinstance(number, float) and isinstance(default, int) and number.is_integer():
            return int(number)
        return number
    return value


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def format_value(value: Any) -> str:
    """A value as written in a derived name.

    Examples:
        >>> [format_value(v) for v in (0.001, 1e-05, 64, True, "gru", (1, 2))]
        ['0.001', '1e-05', '64', 'true', 'gru', '1,2']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return ",".join(format_value(v) for v in value)
    return str(value)


def derived_name(base: str, items: Iterable[tuple[str, Any]]) -> str:
    """``qmix`` + ``[("lr", 0.001)]`` -> ``qmix+lr=0.001``: always one safe path component.

    Examples:
        >>> derived_name("qmix", [("lr", 0.001), ("td_lambda", 0.6)])
        'qmix+lr=0.001+td_lambda=0.6'
        >>> derived_name("qmix", [("agent", "a/b c")])[:11]
        'qmix+agent='
    """
    parts = [base]
    items = list(items)
    for key, value in items:
        text = format_value(value)
        if not SAFE_NAME.match(text):
            text = "h" + stable_hash(text, 8)
        parts.append(f"{key}={text}")
    name = "+".join(parts)
    if len(name) > MAX_NAME or not SAFE_NAME.match(name):
        name = f"{base}+{stable_hash([list(i) for i in items], 10)}"
    return name


# ------------------------------------------------------------------ suites and the CLI
def parse_variant_entries(entries: Any, source: str) -> list[str | VariantRequest]:
    """The ``variants:`` list of a suite YAML: ids/paths, or ``{variant, set, sweep}`` maps."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: `variants` must be a non-empty list")
    out: list[str | VariantRequest] = []
    for entry in entries:
        if not isinstance(entry, dict):
            out.append(str(entry))
            continue
        for key in entry:
            if key not in _ENTRY_KEYS:
                raise ConfigError(f"{source}: unknown key `{key}` in a variant entry."
                                  f"{did_you_mean(str(key), list(_ENTRY_KEYS))}")
        if "variant" not in entry:
            raise ConfigError(f"{source}: a variant entry needs `variant: <id or path>` "
                              f"(got {entry})")
        sets = entry.get("set") or {}
        sweep = entry.get("sweep") or {}
        if not isinstance(sets, dict) or not isinstance(sweep, dict):
            raise ConfigError(f"{source}: `set` and `sweep` of variant {entry['variant']} "
                              "must be mappings")
        for key, values in sweep.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{source}: sweep `{key}` of variant {entry['variant']} must "
                                  "be a non-empty list")
        where = f"{source}: variant entry `{entry['variant']}`"
        for point in sweep_points(sweep) or [{}]:
            merged = {**sets, **point}
            out.append(VariantRequest(str(entry["variant"]), tuple(merged.items()), where)
                       if merged else str(entry["variant"]))
    return out


def with_overrides(entries: Sequence[str | VariantRequest], sets: dict[str, Any],
                   sweep: dict[str, list[Any]], source: str) -> list[str | VariantRequest]:
    """Every entry with the command line's ``--set`` and each ``--sweep`` point applied."""
    out: list[str | VariantRequest] = []
    for entry in entries:
        base, own = (entry.base, dict(entry.overrides)) if isinstance(entry, VariantRequest) \
            else (entry, {})
        for point in sweep_points(sweep) or [{}]:
            merged = {**own, **sets, **point}
            out.append(VariantRequest(base, tuple(merged.items()), source))
    return out


def check_unique(entries: Sequence[str | VariantRequest]) -> list[str]:
    """Names of the entries (all validated); two entries with one name are an error."""
    names: list[str] = []
    for entry in entries:
        name = entry_name(entry)
        if name in names:
            raise ConfigError(f"variant `{name}` is listed twice")
        names.append(name)
    return names
