"""One strict, generic registry for tasks and variants.

Duplicate ids raise; unknown ids raise with a difflib "did you mean". Entries may be objects or
lazy ``"module:attr"`` strings, imported on first use (Gymnasium-style), so ``import kaleibench``
and ``kaleibench --help`` stay light.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownIdError(KeyError):
    """An id that is not registered; the message carries the closest matches."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the plain sentence.
        return str(self.args[0])


class DuplicateIdError(ValueError):
    """An id registered twice."""


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return a " Did you mean: `x`?" suffix, or "" when nothing is close.

    Examples:
        >>> did_you_mean("qmx", ["qmix", "random"])
        ' Did you mean: `qmix`?'
    """
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(f'`{c}`' for c in close)}?" if close else ""


def load_entry_point(path: str) -> object:
    """Import ``"pkg.mod:attr"`` and return the attribute."""
    if ":" not in path:
        raise ValueError(f"entry point {path!r} must have the form 'package.module:attribute'")
    module_name, attr = path.split(":", 1)
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from exc


class Registry(Generic[T]):
    """A name -> entry mapping that refuses duplicates and explains misses.

    Examples:
        >>> r: Registry[int] = Registry("number")
        >>> r.register("one", 1)
        >>> r.get("one")
        1
        >>> r.get("onee")
        Traceback (most recent call last):
        ...
        kaleibench.registry.UnknownIdError: unknown number `onee`. Did you mean: `one`?
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._loaders: list[Callable[[Registry[T]], None]] = []

    def register(self, name: str, entry: T | str) -> None:
        """Add ``entry`` under ``name``; a string entry is a lazy ``module:attr`` path."""
        if name in self._entries:
            raise DuplicateIdError(f"{self.kind} `{name}` is already registered")
        self._entries[name] = entry

    def add_loader(self, loader: Callable[[Registry[T]], None]) -> None:
        """Run ``loader(self)`` once, before the first lookup (plugins, entry points)."""
        self._loaders.append(loader)

    def _run_loaders(self) -> None:
        while self._loaders:
            self._loaders.pop(0)(self)

    def get(self, name: str) -> T:
        """Return the entry for ``name``, importing it if it is lazy."""
        self._run_loaders()
        if name not in self._entries:
            raise UnknownIdError(
                f"unknown {self.kind} `{name}`.{did_you_mean(name, list(self._entries))}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = load_entry_point(entry)  # type: ignore[assignment]
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        """All registered ids, sorted."""
        self._run_loaders()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._run_loaders()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
