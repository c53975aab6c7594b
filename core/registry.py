"""Plugin discovery and the registry of everything plugins contribute.

Plugins come only from two places: the built-in modules listed in `DEFAULT_PLUGINS`, and
installed distributions exposing the entry-point group `astrotransfer`. Nothing is imported
from paths or names given at run time, so a checkpoint or config can never pull in code.

`ASTROTRANSFER_PLUGINS` (allow-list) and `ASTROTRANSFER_DISABLE_PLUGINS` (block-list) are
comma-separated entry-point or distribution names; they apply to third-party plugins only.
A plugin that fails to import or raises inside a hook is recorded in `Registry.errors`
and skipped: one broken plugin must never take the CLI down.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import __version__, hookspecs
from .errors import UserError

ENTRY_POINT_GROUP = "astrotransfer"
DEFAULT_PLUGINS = (
    "astrotransfer.surveys",
    "astrotransfer.plugins.backbones",
    "astrotransfer.plugins.adapters",
    "astrotransfer.plugins.trainers",
    "astrotransfer.plugins.crossmatch",
    "astrotransfer.plugins.selectors",
    "astrotransfer.plugins.labelling",
    "astrotransfer.plugins.distributed",
    # before analysis: commands register in reverse order, and few-shot joins its `study` group
    "astrotransfer.plugins.transfer_commands",
    "astrotransfer.plugins.analysis",
)
KINDS = ("survey", "backbone", "adapter", "trainer", "selector")
_HOOK_OF_KIND = {
    "survey": "register_surveys",
    "backbone": "register_backbones",
    "adapter": "register_adapters",
    "trainer": "register_trainers",
    "selector": "register_selectors",
}


@dataclass
class Entry:
    name: str
    kind: str
    obj: Any
    plugin: str
    dist: str
    version: str

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "dist": self.dist, "version": self.version}


@dataclass
class Registry:
    pm: pluggy.PluginManager
    dists: dict[str, tuple[str, str]] = field(default_factory=dict)  # plugin -> (dist, version)
    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    errors: list[tuple[str, str]] = field(default_factory=list)

    def all(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [e for k in kinds for e in self.entries[k].values()]

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.entries[kind][name].obj
        except KeyError:
            known = ", ".join(sorted(self.entries[kind])) or "none"
            raise UserError(
                f"unknown {kind} '{name}' (known: {known}); "
                f"see `astrotransfer plugins list` or install the plugin that provides it"
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {s.strip() for s in raw.split(",") if s.strip()}


def _load_entry_points(pm: pluggy.PluginManager, reg: Registry) -> None:
    allow = _env_list("ASTROTRANSFER_PLUGINS")
    block = _env_list("ASTROTRANSFER_DISABLE_PLUGINS") or set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "unknown"
        version = ep.dist.version if ep.dist else "unknown"
        names = {ep.name, dist}
        if names & block or (allow is not None and not names & allow):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken third-party plugin is reported, never fatal
            reg.errors.append((ep.name, f"failed to load: {type(exc).__name__}: {exc}"))
            continue
        reg.dists[ep.name] = (dist, version)


def _collect(reg: Registry, kind: str) -> None:
    hook = getattr(reg.pm.hook, _HOOK_OF_KIND[kind])
    for impl in reversed(hook.get_hookimpls()):  # registration order: built-ins first
        plugin = impl.plugin_name
        dist, version = reg.dists.get(plugin, ("astrotransfer", __version__))

        def register(obj, _plugin=plugin, _dist=dist, _version=version):
            name = getattr(obj, "name", None)
            if not name:
                raise TypeError(f"{kind} {obj!r} has no .name")
            reg.entries[kind][name] = Entry(name, kind, obj, _plugin, _dist, _version)

        try:
            impl.function(register=register)
        except Exception as exc:
            reg.errors.append((plugin, f"{_HOOK_OF_KIND[kind]} raised {type(exc).__name__}: {exc}"))


def build_registry() -> Registry:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    reg = Registry(pm=pm)
    for module_name in DEFAULT_PLUGINS:
        try:
            pm.register(importlib.import_module(module_name), name=module_name)
        except Exception as exc:  # a built-in failing (e.g. a missing optional dep) stays contained
            reg.errors.append((module_name, f"failed to load: {type(exc).__name__}: {exc}"))
    _load_entry_points(pm, reg)
    for kind in KINDS:
        _collect(reg, kind)
    return reg


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    return build_registry()


def get(kind: str, name: str) -> Any:
    return get_registry().get(kind, name)
