"""Named registries that the registration hooks fill."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from locrob.errors import LocrobError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object mapping for one kind of plugin (metric, defense, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> None:
        """Add ``obj`` under ``name``; names are unique within a registry."""
        if not isinstance(name, str) or not name or ":" in name:
            raise LocrobError(
                f"{self.kind} names must be non-empty strings without ':' (got {name!r})"
            )
        if name in self._items:
            raise LocrobError(
                f"{self.kind} '{name}' is registered twice; disable one of the plugins "
                "with the LOCROB_PLUGINS allow-list"
            )
        self._items[name] = obj

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
