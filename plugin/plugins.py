"""The plugin manager: loads the ``locrob`` entry points once, lazily, and fills the registries.

Built-in plugins are entry points of the ``locrob`` distribution itself, so they load through
exactly the path a third-party package uses. ``LOCROB_PLUGINS`` is an allow-list: unset loads
every installed plugin; a comma-separated list of entry-point or distribution names loads only
those; an empty string loads none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from locrob import hookspecs
from locrob.errors import LocrobError
from locrob.registry import Registry

ENTRY_POINT_GROUP = "locrob"
ALLOW_ENV = "LOCROB_PLUGINS"


@dataclass
class Registries:
    """Everything the registration hooks registered."""

    metrics: Registry[Any] = field(default_factory=lambda: Registry("metric"))
    defenses: Registry[Any] = field(default_factory=lambda: Registry("defense"))
    model_sources: Registry[Any] = field(default_factory=lambda: Registry("model source"))
    dataset_sources: Registry[Any] = field(default_factory=lambda: Registry("dataset"))
    corruptions: Registry[Any] = field(default_factory=lambda: Registry("corruption"))


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
        allow = _allow_list()
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        if allow is not None:
            installed = {ep.name for ep in entry_points} | {
                ep.dist.name for ep in entry_points if ep.dist is not None
            }
            unknown = sorted(allow - installed)
            if unknown:
                raise LocrobError(
                    f"{ALLOW_ENV} names {', '.join(unknown)}, which no installed plugin provides; "
                    f"installed: {', '.join(sorted(installed)) or 'none'}"
                )
        for ep in entry_points:
            dist_name = ep.dist.name if ep.dist is not None else ""
            if allow is not None and ep.name not in allow and dist_name not in allow:
                continue
            if self.pm.has_plugin(ep.name):
                continue
            self.pm.register(ep.load(), name=ep.name)
            self._dists[ep.name] = ep.dist
        self._loaded = True

    def register(self, plugin: ModuleType | object, name: str | None = None) -> None:
        """Register a plugin object by hand (a notebook, a test); the registries refill."""
        self.load()
        self.pm.register(plugin, name=name)
        self._dists.setdefault(self.pm.get_name(plugin) or "", None)
        self._registries = None

    def unregister(self, name: str) -> None:
        """Remove a plugin registered by name; the registries refill."""
        self.pm.unregister(name=name)
        self._dists.pop(name, None)
        self._registries = None

    @property
    def registries(self) -> Registries:
        """The registries, filled on first use."""
        if self._registries is None:
            self.load()
            reg = Registries()
            hook = self.pm.hook
            hook.register_metrics(register=reg.metrics.register)
            hook.register_defenses(register=reg.defenses.register)
            hook.register_model_sources(register=reg.model_sources.register)
            hook.register_dataset_sources(register=reg.dataset_sources.register)
            hook.register_corruptions(register=reg.corruptions.register)
            self._registries = reg
        return self._registries

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


def _allow_list() -> set[str] | None:
    value = os.environ.get(ALLOW_ENV)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


host = PluginHost()


def registries() -> Registries:
    """The global registries (loading plugins on first use)."""
    return host.registries


def reload() -> None:
    """Forget loaded plugins and registries; the next use loads the entry points again."""
    host.__init__()
