"""The shared base of metrics and defenses: a named dataclass whose fields are its settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from locrob.errors import LocrobError
from locrob.registry import Registry


class Configurable:
    """Subclasses are dataclasses; each field is a setting with a default.

    ``create(**options)`` checks option names against the fields and gives a one-line
    error listing the accepted ones; subclasses check values in ``__post_init__``.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "plugin"

    @classmethod
    def option_names(cls) -> list[str]:
        if not dataclasses.is_dataclass(cls):
            return []
        return [f.name for f in dataclasses.fields(cls) if f.init]

    @classmethod
    def create(cls, **options: Any) -> Configurable:
        """An instance with ``options`` applied; unknown option names are an error."""
        accepted = cls.option_names()
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise LocrobError(
                f"{cls.kind} '{cls.name}' has no option {', '.join(unknown)}; "
                f"its options: {', '.join(accepted) or 'none'}"
            )
        return cls(**options)

    def settings(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (recorded in checkpoints and reports)."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings()}


def check(condition: bool, owner: str, message: str) -> None:
    """Raise a :class:`LocrobError` naming ``owner`` unless ``condition`` holds."""
    if not condition:
        raise LocrobError(f"{owner}: {message}")


def instantiate(
    items: Sequence[str | Configurable],
    options: Mapping[str, Mapping[str, Any]] | None,
    registry: Registry[Any],
    base: type[Configurable],
) -> list[Any]:
    """Metrics or defenses from registered names (with ``options[name]``) or ready instances.

    The registered name is the one name: a class registered under another name than its own
    ``name`` is refused, as are options for a ready instance, duplicates, and options for
    anything not requested.
    """
    options = options or {}
    kind = base.kind
    made: list[Any] = []
    for item in items:
        if isinstance(item, base):
            if item.name in options:
                raise LocrobError(
                    f"options for {kind} '{item.name}' were given by name, but it was passed as a "
                    "ready instance; set them on the instance"
                )
            obj = item
        elif isinstance(item, str):
            cls = registry.get(item)
            if getattr(cls, "name", None) != item:
                raise LocrobError(
                    f"{kind} class {getattr(cls, '__name__', cls)!s} is registered as '{item}' but "
                    f"names itself '{getattr(cls, 'name', '')}'; the two must agree"
                )
            obj = cls.create(**options.get(item, {}))
        else:
            raise LocrobError(
                f"expected a {kind} name or a {base.__name__}, got {type(item).__name__}"
            )
        if not obj.name:
            raise LocrobError(f"{kind} {type(obj).__name__} has no name; set its class attribute")
        made.append(obj)
    names = [obj.name for obj in made]
    if len(set(names)) != len(names):
        raise LocrobError(f"a {kind} is listed twice: {', '.join(names)}")
    unused = sorted(set(options) - set(names))
    if unused:
        raise LocrobError(f"options given for {kind}s not requested: {', '.join(unused)}")
    return made
