"""The shared base of metrics and defenses: a named dataclass whose fields are its settings."""

from __future__ import annotations

import dataclasses
import functools
import json
import numbers
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Union

from locrob.errors import LocrobError
from locrob.registry import Registry


class Configurable:
    """Subclasses are dataclasses; each field is a setting with a default.

    ``create(**options)`` checks option names against the fields and gives a one-line
    error listing the accepted ones; subclasses check values in ``__post_init__``.

    Types are checked on one path, however the instance is made (``create`` from ``-o``
    options, a config, or the class called directly): before the subclass's own
    ``__post_init__`` runs, every setting is coerced to its field annotation by
    :func:`coerce` (a scalar where a list is expected becomes a list of one). To make that
    hold without each subclass calling ``super().__post_init__()``, ``__init_subclass__``
    wraps a subclass's own ``__post_init__`` so the coercion runs first; a subclass without
    one inherits the base's, which only coerces. ``__post_init__`` is left to check values
    (ranges, names), never types.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "plugin"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None or getattr(own, "coerces_settings", False):
            return

        @functools.wraps(own)
        def post_init(self: Configurable, *init_vars: Any) -> None:  # InitVar fields, if any
            self._coerce_settings()
            own(self, *init_vars)

        post_init.coerces_settings = True  # type: ignore[attr-defined]
        cls.__post_init__ = post_init  # type: ignore[method-assign]

    def __post_init__(self) -> None:
        self._coerce_settings()

    def _coerce_settings(self) -> None:
        for name, hint in option_types(type(self)).items():
            # object.__setattr__: a frozen dataclass is coerced too
            object.__setattr__(self, name, coerce(getattr(self, name), hint, type(self), name))

    @classmethod
    def option_names(cls) -> list[str]:
        if not dataclasses.is_dataclass(cls):
            return []
        return [f.name for f in dataclasses.fields(cls) if f.init]

    @classmethod
    def create(cls, **options: Any) -> Configurable:
        """An instance with ``options`` applied; unknown option names are an error, values are
        coerced to the fields' types (see the class docstring)."""
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


@functools.cache
def option_types(cls: type[Configurable]) -> dict[str, Any]:
    """Each option of ``cls`` and its field annotation, resolved (``from __future__ import
    annotations`` leaves them as strings)."""
    if not dataclasses.is_dataclass(cls):
        return {}
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError) as err:
        raise LocrobError(
            f"{cls.kind} '{cls.name}': the types of its options cannot be resolved ({err}); "
            "import the names its annotations use at module level"
        ) from None
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


class _Mismatch(Exception):
    """A value not of the expected type; :func:`coerce` turns it into a LocrobError."""


_SEQUENCES = (list, tuple, Sequence)
INFINITY = re.compile(r"[+-]?(inf|infinity)", re.IGNORECASE)
_MAPPINGS = (dict, Mapping)
_UNIONS = (Union, types.UnionType)


def coerce(value: Any, hint: Any, owner: type[Configurable], option: str) -> Any:
    """``value`` as option ``option`` of ``owner`` annotated ``hint`` wants it.

    Supported: bool, int, float (an int is accepted, as is ``inf`` written as text; a bool is
    not a number), str, None,
    ``X | None`` and other unions (the first member that fits the value as it is, else the
    first it fits as a list of one), ``Literal``, ``list[X]``,
    ``tuple[X, ...]``, ``tuple[X, Y]``, ``Sequence[X]`` (a scalar, a string or a dict included,
    becomes a list of one; numpy arrays and tensors are read as lists), ``dict[K, V]`` and
    ``Mapping[K, V]``, ``Any``, and plain classes
    (an instance check). Anything else is a :class:`LocrobError` naming the option, the type
    it expects and an example.
    """
    try:
        return _coerce(value, hint)
    except _Mismatch:
        declared = next(f for f in dataclasses.fields(owner) if f.name == option)
        raise LocrobError(
            f"{owner.kind} '{owner.name}' option '{option}' expects {describe_type(hint)}, like "
            f"{_example(declared, hint)}; got {value!r}"
        ) from None


def _coerce(value: Any, hint: Any, wrap: bool = True) -> Any:
    """``value`` as ``hint``; ``wrap``: a single value may become a list of one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy and torch: plain Python
        value = value.tolist()
    if hint is Any or hint is object:
        return value
    if origin in _UNIONS:
        # a member the value fits as it is wins over one it fits as a list of one
        # (``list[str] | str`` keeps "fog"; ``list[float] | None`` keeps None)
        for member_wrap in (False, True):
            for member in args:
                try:
                    return _coerce(value, member, member_wrap)
                except _Mismatch:
                    continue
        raise _Mismatch
    if origin is Literal:
        # type as well as value: True == 1, but true is not the literal 1
        if any(value == arg and type(value) is type(arg) for arg in args):
            return value
        raise _Mismatch
    if hint is None or hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if isinstance(value, bool) and hint in (int, float):
        raise _Mismatch
    if hint is int and isinstance(value, numbers.Integral):
        return int(value)
    if hint is float and isinstance(value, numbers.Real):
        return value if isinstance(value, int) else float(value)
    if hint is float and isinstance(value, str) and INFINITY.fullmatch(value):
        return float(value)  # -o clever.norm=inf: JSON has no inf, so -o reads it as text
    container = origin or hint
    if container in _SEQUENCES:
        many = isinstance(value, Sequence) and not isinstance(value, (str, bytes))
        if not (many or wrap):
            raise _Mismatch
        items = list(value) if many else [value]
        if container is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise _Mismatch
            return tuple(_coerce(v, a) for v, a in zip(items, args, strict=True))
        coerced = [_coerce(v, args[0] if args else Any) for v in items]
        return tuple(coerced) if container is tuple else coerced
    if container in _MAPPINGS:
        if not isinstance(value, Mapping):
            raise _Mismatch
        key, item = args or (Any, Any)
        return {_coerce(k, key): _coerce(v, item) for k, v in value.items()}
    if isinstance(container, type):
        if isinstance(value, container):
            return value
        raise _Mismatch
    return value  # an annotation this check does not understand (a TypeVar, a Protocol...)


_NAMES: dict[Any, tuple[str, str]] = {
    bool: ("true or false", "booleans"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    type(None): ("null", "nulls"),
}


def describe_type(hint: Any, plural: bool = False) -> str:
    """``list[float] | None`` -> ``"a list of numbers (or a number) or null"``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None:
        hint = type(None)
    if hint in _NAMES:
        return _NAMES[hint][plural]
    if origin in _UNIONS:
        return " or ".join(describe_type(member, plural) for member in args)
    if origin is Literal:
        return ("values among " if plural else "one of ") + ", ".join(map(json.dumps, args))
    container = origin or hint
    if container in _SEQUENCES:
        if container is tuple and args and args[-1] is not Ellipsis:
            same = len(set(args)) == 1  # tuple[float, float]: "a list of 2 numbers"
            items = describe_type(args[0], True) if same else "values"
            return ("lists" if plural else "a list") + f" of {len(args)} {items}"
        item = args[0] if args else Any
        if item is Any:
            return "lists" if plural else "a list"
        if plural:
            return f"lists of {describe_type(item, True)}"
        return f"a list of {describe_type(item, True)} (or {describe_type(item)})"
    if container in _MAPPINGS:
        return "dicts" if plural else "a dict"
    if hint is Any or hint is object:
        return "values" if plural else "any value"
    label = getattr(container, "__name__", str(hint))
    return f"{label} values" if plural else f"a {label}"


def _example(field: dataclasses.Field[Any], hint: Any) -> str:
    """An accepted value as ``-o`` reads it (JSON): the field's default, else one by type."""
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = None
    if default is None:
        default = _typical(hint)
    text = json.dumps(default, default=str)
    if len(text) > 60 and isinstance(default, (list, tuple)) and default:
        text = json.dumps(list(default[:1]), default=str)  # long lists: their first item
    return text


def _typical(hint: Any) -> Any:
    """A value of type ``hint`` (for the example in an error message)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    typical = {bool: True, int: 1, float: 0.5, str: "text"}
    if hint in typical:
        return typical[hint]
    if origin in _UNIONS:
        members = [m for m in args if m is not type(None)]
        return _typical(members[0]) if members else None
    if origin is Literal:
        return args[0]
    container = origin or hint
    if container in _SEQUENCES:
        if container is tuple and args and args[-1] is not Ellipsis:
            return [_typical(a) for a in args]
        return [_typical(args[0] if args else Any)]
    if container in _MAPPINGS:
        return {"key": _typical(args[1] if args else Any)}
    return "value"


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
