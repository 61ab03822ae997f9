"""A small name -> object registry for metrics, audit checks and compressors.

Duplicate names raise; unknown names raise and list what exists. Third-party packages can add entries
through the entry-point group ``assay.<kind>`` (loaded lazily on first lookup).
A contract test runs over every registered name, so a new plugin is tested the moment it exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from assay.errors import NotFoundError, UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("ece")``."""

        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise UsageError(f"A {self.kind} named '{name}' is already registered; pick another name.")
        self._items[name] = obj

    def get(self, name: str) -> T:
        self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise NotFoundError(f"Unknown {self.kind} '{name}'. Known: {known}.") from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=f"assay.{self.kind}"):
            if ep.name not in self._items:
                self.add(ep.name, ep.load())
