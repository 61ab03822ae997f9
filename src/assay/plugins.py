"""The one way to extend assay: a name -> object :class:`Registry` per kind of plugin.

Every extension point is a registry of this type, and nothing else: the metrics
(:data:`assay.metrics.METRICS`), the data audit checks, the compressors, the trust suite's families
(:data:`assay.trust.TRUST_FAMILIES`), the drift detectors (:data:`assay.serve.drift.DETECTORS`), the
gate's rule kinds (:data:`assay.gate.RULE_KINDS`) and the model adapters. Duplicate names raise; unknown
names raise and list what exists. Third-party packages add entries through the entry-point group
``assay.<kind>`` (loaded lazily, on first lookup). A contract test per registry (tests/contract/) runs
over every registered name, so a new plugin is tested the moment it exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from assay.errors import NotFoundError, UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Plugins of one ``kind`` by name.

    Add with ``registry.add(name, obj)`` or the decorator ``@registry.register(name)``; look up with
    :meth:`get`; list with :meth:`names` (sorted, for messages and tests) or :meth:`in_order` (the order
    of registration: built-ins first, in the order their module lists them, then entry points).
    """

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
        """Register ``obj`` as ``name``; a name already taken is a :class:`~assay.errors.UsageError`."""
        if name in self._items:
            raise UsageError(f"A {self.kind} named '{name}' is already registered; pick another name.")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """The plugin named ``name``; an unknown name is a :class:`~assay.errors.NotFoundError` listing
        the known ones."""
        self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise NotFoundError(f"Unknown {self.kind} '{name}'. Known: {known}.") from None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self.in_order())

    def in_order(self) -> list[str]:
        """Every registered name in the order of registration."""
        self._load_entry_points()
        return list(self._items)

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
