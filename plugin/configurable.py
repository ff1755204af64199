"""The shared base of metrics and defenses: a named dataclass whose fields are its settings."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from locrob.errors import LocrobError


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
