"""The plugin manager: loads the ``locrob`` entry points once, lazily, and fills the registries.

Built-in plugins are entry points of the ``locrob`` distribution itself, so they load through
exactly the path a third-party package uses. ``LOCROB_PLUGINS`` chooses what loads, as a
comma-separated list of entry-point or distribution names:

- unset: every installed plugin;
- ``NAME``: the built-ins and the plugins named (an empty value: the built-ins alone);
- ``-NAME``: leave that plugin out; a list of only ``-NAME`` items loads every other installed
  plugin, and ``-locrob`` leaves out the built-ins;
- an entry-point name decides before its distribution's: ``-locrob,clean`` loads only the
  built-in ``clean``.

Two plugins registering one name (two ``mean-confidence`` metrics) is an error naming both;
``locrob plugins`` still lists everything, the clash marked.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from locrob import hookspecs
from locrob.errors import LocrobError
from locrob.registry import Registry

if TYPE_CHECKING:
    from locrob.contract import DatasetSource, ModelSource, Presentation
    from locrob.corruptions.base import Corruption
    from locrob.defenses.base import Defense
    from locrob.metrics.base import Metric

ENTRY_POINT_GROUP = "locrob"
ALLOW_ENV = "LOCROB_PLUGINS"
BUILTIN_DISTRIBUTION = "locrob"


class Registries:
    """Everything the registration hooks registered: the attribute ``X`` is filled by
    ``register_X``. The one list of registries: the plugin host, its clash check and
    ``locrob plugins`` all walk it (:meth:`each`)."""

    def __init__(self) -> None:
        self.metrics: Registry[type[Metric]] = Registry("metric")
        self.defenses: Registry[type[Defense]] = Registry("defense")
        self.model_sources: Registry[ModelSource] = Registry("model source", "models")
        self.dataset_sources: Registry[DatasetSource] = Registry("dataset")
        self.corruptions: Registry[Corruption] = Registry("corruption")
        self.presentations: Registry[Presentation] = Registry("presentation")

    def each(self) -> list[tuple[str, Registry[Any]]]:
        """(attribute name, registry) of every registry, in the order above."""
        return list(vars(self).items())


@dataclass(frozen=True)
class PluginInfo:
    """What ``locrob plugins`` prints for one plugin."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


class PluginHost:
    """Owns the global :class:`pluggy.PluginManager` and the registries it fills."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs.RegistrationSpec)
        self._dists: dict[str, metadata.Distribution | None] = {}
        self._loaded = False
        self._registries: Registries | None = None

    def load(self) -> None:
        """Load the allowed entry points (once)."""
        if self._loaded:
            return
        selection = _selection()
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        if selection is not None:
            installed = {_canonical(ep.name) for ep in entry_points} | {
                _canonical(ep.dist.name) for ep in entry_points if ep.dist is not None
            }
            unknown = sorted(selection.include.union(selection.exclude) - installed)
            if unknown:
                raise LocrobError(
                    f"{ALLOW_ENV} names {', '.join(unknown)}, which no installed plugin provides; "
                    f"installed: {', '.join(sorted(installed)) or 'none'}"
                )
        for ep in entry_points:
            dist_name = ep.dist.name if ep.dist is not None else ""
            if selection is not None and not selection.wants(ep.name, dist_name):
                continue
            if self.pm.has_plugin(ep.name):
                other = self._dists.get(ep.name)
                raise LocrobError(
                    f"two installed plugins are named '{ep.name}' (from {dist_name or '?'} and "
                    f"{other.name if other else '?'}); uninstall one, or leave one out with "
                    f"{ALLOW_ENV}=-DISTRIBUTION"
                )
            try:
                self.pm.register(ep.load(), name=ep.name)
            except Exception as err:  # a broken third-party plugin must not break every command
                raise LocrobError(
                    f"plugin '{ep.name}' from {dist_name or '?'} failed to load "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                    f"fix or uninstall it, or leave it out with {ALLOW_ENV}=-{ep.name}"
                ) from None
            self._dists[ep.name] = ep.dist
        self._loaded = True

    def register(self, plugin: ModuleType | object, name: str | None = None) -> None:
        """Register a plugin object by hand (a notebook, a test); the registries refill."""
        self.load()
        try:
            self.pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as err:
            raise LocrobError(f"cannot register plugin {name or plugin!r}: {err}") from None
        registered = self.pm.get_name(plugin) or ""
        self._dists.setdefault(registered, None)
        self._registries = None
        clashes = self.clashes()
        if clashes:  # refused here, rather than breaking every later command
            self.pm.unregister(name=registered)
            self._dists.pop(registered, None)
            self._registries = None
            raise LocrobError(f"cannot register plugin '{registered}': {clashes[0]}")

    @property
    def registries(self) -> Registries:
        """The registries, filled on first use; two plugins registering one name is an error."""
        clashes = self.clashes()
        if clashes:
            more = f" (and {len(clashes) - 1} more clash(es))" if len(clashes) > 1 else ""
            raise LocrobError(
                f"{clashes[0]}{more}; uninstall one, or leave one out with {ALLOW_ENV}=-NAME"
            )
        return self.registrations()

    def registrations(self) -> Registries:
        """The registries as the plugins filled them, clashing names included."""
        if self._registries is None:
            self.load()
            reg = Registries()
            for name, registry in reg.each():
                hook = getattr(self.pm.hook, f"register_{name}")
                # each plugin's hook called on its own (in the order the plugins were
                # registered), so that every registration knows which plugin made it
                for impl in hook.get_hookimpls():
                    register = functools.partial(registry.register, owner=impl.plugin_name)
                    impl.function(**dict.fromkeys(impl.argnames, register))  # its one argument
            self._registries = reg
        return self._registries

    def clashes(self) -> list[str]:
        """A sentence for each name that several plugins (or one, twice) registered."""
        sentences = []
        for _, registry in self.registrations().each():
            for name, owners in registry.clashes().items():
                sentences.append(f"{registry.kind} '{name}' is registered by {self.owners(owners)}")
        return sentences

    def owners(self, names: Sequence[str]) -> str:
        """Plugins with their distributions: ``plugin 'a' (dist-a 1.0) and plugin 'b' ...``."""
        described = []
        for name in dict.fromkeys(names):
            dist = self._dists.get(name)
            origin = f"{dist.name} {dist.version}" if dist is not None else "registered at run time"
            described.append(f"plugin '{name}' ({origin})")
        twice = " (twice)" if len(described) == 1 else ""
        return " and ".join(described) + twice

    def plugins(self) -> list[PluginInfo]:
        """Name, distribution, version and implemented hooks of every loaded plugin."""
        self.load()
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            dist = self._dists.get(name)
            hooks = tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or []))
            infos.append(
                PluginInfo(
                    name=name,
                    distribution=dist.name if dist is not None else "(registered at run time)",
                    version=dist.version if dist is not None else "",
                    hooks=hooks,
                )
            )
        return sorted(infos, key=lambda info: (info.distribution != "locrob", info.name))


def _canonical(name: str) -> str:
    """Package-name normalization (PEP 503), so ``locrob_example`` matches ``locrob-example``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Selection:
    """The plugins ``LOCROB_PLUGINS`` names (canonical names), to load or to leave out."""

    include: frozenset[str]
    exclude: frozenset[str]

    def wants(self, entry_point: str, distribution: str) -> bool:
        """Whether the entry point loads (the module docstring states the rules)."""
        for name in (_canonical(entry_point), _canonical(distribution)):
            if name in self.exclude:
                return False
            if name in self.include:
                return True
        builtin = _canonical(distribution) == BUILTIN_DISTRIBUTION
        return builtin or (bool(self.exclude) and not self.include)


def _selection() -> Selection | None:
    """What ``LOCROB_PLUGINS`` asks for; None where it is unset (every plugin loads)."""
    value = os.environ.get(ALLOW_ENV)
    if value is None:
        return None
    items = [part.strip() for part in value.split(",") if part.strip()]
    bare = [item for item in items if not item.lstrip("-").strip()]
    if bare:
        raise LocrobError(f"{ALLOW_ENV} has a '-' without a name; write -NAME to leave one out")
    include = frozenset(_canonical(i) for i in items if not i.startswith("-"))
    exclude = frozenset(_canonical(i[1:].strip()) for i in items if i.startswith("-"))
    both = sorted(include & exclude)
    if both:
        raise LocrobError(f"{ALLOW_ENV} both names and leaves out {', '.join(both)}; keep one")
    return Selection(include, exclude)


def run_manager(spec: type, active: Sequence[Any]) -> pluggy.PluginManager:
    """A plugin manager for one run holding the ``active`` metrics or defenses.

    Every plugin must implement at least one hook of ``spec`` and nothing outside it, so a
    misspelled hook or a missing ``@hookimpl`` is an error instead of a plugin that silently
    does nothing.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(spec)
    hooks = ", ".join(name for name in vars(spec) if not name.startswith("_"))
    for plugin in active:
        label = f"{getattr(plugin, 'kind', 'plugin')} '{plugin.name}'"
        try:
            pm.register(plugin, name=plugin.name)
        except pluggy.PluginValidationError as err:
            raise LocrobError(f"{label} does not fit its hook spec: {err}") from None
        if not pm.get_hookcallers(plugin):
            raise LocrobError(
                f"{label} implements none of the hooks {hooks}; mark its methods @locrob.hookimpl"
            )
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise LocrobError(f"{err}; the hooks it may implement: {hooks}") from None
    return pm


host = PluginHost()


def registries() -> Registries:
    """The global registries (loading plugins on first use)."""
    return host.registries


def reload() -> None:
    """Forget loaded plugins and registries; the next use loads the entry points again."""
    host.__init__()
