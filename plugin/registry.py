"""Named registries that the registration hooks fill."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from locrob.errors import LocrobError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object mapping for one kind of plugin (metric, defense, ...)."""

    def __init__(self, kind: str, label: str = "") -> None:
        self.kind = kind
        self.label = label or f"{kind}s"  # what listings call the whole registry
        self._items: dict[str, T] = {}
        self._owners: dict[str, list[str]] = {}

    def register(self, name: str, obj: T, owner: str = "") -> None:
        """Add ``obj`` under ``name``, registered by the plugin ``owner``.

        Names are unique within a registry: a second registration keeps the first object and is
        recorded in :meth:`clashes` (the plugin host refuses it, naming both plugins).
        """
        if not isinstance(name, str) or not name or ":" in name:
            raise LocrobError(
                f"{self.kind} names must be non-empty strings without ':' (got {name!r})"
            )
        self._owners.setdefault(name, []).append(owner)
        self._items.setdefault(name, obj)

    def clashes(self) -> dict[str, list[str]]:
        """Each name registered more than once, with the owners that registered it."""
        return {name: owners for name, owners in self._owners.items() if len(owners) > 1}

    def get(self, name: str) -> T:
        """The object registered under ``name``; an unknown name lists the known ones."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise LocrobError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
