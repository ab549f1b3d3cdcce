"""Typed registers that plugins fill, and the lookups recipes make in them."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import PluginError, RecipeError, UnknownComponentError

_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")

# Parameters the core fills in when a factory asks for them: they are context, not
# recipe keys. ``tokenizer``: the run's tokenizer; ``components``: a
# :class:`trl_plus.components.Components` that builds other components from specs
# (how a filter uses a reward source).
CONTEXT_PARAMETERS = ("tokenizer", "components")


@dataclass(frozen=True)
class ComponentInfo:
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str

    def keywords(self) -> tuple[list[str], list[str], bool]:
        """(required, optional, accepts_any) recipe keywords of the factory."""
        try:
            params = inspect.signature(self.factory).parameters.values()
        except (TypeError, ValueError):
            return [], [], True
        required, optional, any_kw = [], [], False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                any_kw = True
            elif p.kind is p.VAR_POSITIONAL or p.name in CONTEXT_PARAMETERS:
                continue
            elif p.default is p.empty:
                required.append(p.name)
            else:
                optional.append(p.name)
        return required, optional, any_kw

    def wants(self, parameter: str) -> bool:
        try:
            return parameter in inspect.signature(self.factory).parameters
        except (TypeError, ValueError):
            return False


class Register:
    """What a registration hook receives: ``register.add(name, factory)``."""

    def __init__(self, registry: Registry, plugin: str):
        self._registry = registry
        self._plugin = plugin

    @property
    def kind(self) -> str:
        return self._registry.kind

    def add(self, name: str, factory: Callable[..., Any], *, description: str | None = None) -> None:
        """Add a component under ``name``; ``factory(**recipe_kwargs)`` builds it."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(
                f"plugin {self._plugin!r} registered a {self.kind} with an invalid name {name!r}: "
                "use lower-case letters, digits, '_', '-' or '.', starting with a letter"
            )
        if not callable(factory):
            raise PluginError(
                f"plugin {self._plugin!r} registered {self.kind} {name!r} with a factory that is not callable: "
                f"{factory!r}"
            )
        existing = self._registry._items.get(name)
        if existing is not None:
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin {existing.plugin!r} and by plugin "
                f"{self._plugin!r}; block one of them with TRL_PLUS_BLOCK_PLUGINS"
            )
        doc = description or inspect.getdoc(factory) or ""
        self._registry._items[name] = ComponentInfo(self.kind, name, factory, self._plugin, doc.split("\n")[0])


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" Did you mean: {close[0]}?" if close else ""


class Registry:
    """The components of one kind, by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, ComponentInfo] = {}

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self._items[n] for n in self.names())

    def get(self, name: str, where: str | None = None) -> ComponentInfo:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}.{did_you_mean(str(name), self.names())} "
                f"Available: {', '.join(self.names()) or '(none)'}",
                key=where,
            ) from None

    def check_kwargs(self, name: str, kwargs: Mapping[str, Any], where: str | None = None) -> ComponentInfo:
        """Check that ``kwargs`` are exactly what the component takes, without building it."""
        info = self.get(name, where)
        required, optional, any_kw = info.keywords()
        allowed = required + optional
        for key in kwargs:
            if key in CONTEXT_PARAMETERS:
                raise RecipeError(f"{self.kind} {name!r}: {key!r} is filled in by trl-plus, not by the recipe", where)
            if not any_kw and key not in allowed:
                raise RecipeError(
                    f"{self.kind} {name!r} has no keyword {key!r}.{did_you_mean(key, allowed)} "
                    f"Allowed: {', '.join(allowed) or '(none)'}",
                    where,
                )
        missing = [k for k in required if k not in kwargs]
        if missing:
            raise RecipeError(f"{self.kind} {name!r} needs {', '.join(repr(m) for m in missing)}", where)
        return info

    def create(self, name: str, kwargs: Mapping[str, Any], where: str | None = None, context: Mapping | None = None):
        info = self.check_kwargs(name, kwargs, where)
        call_kwargs = dict(kwargs)
        for key, value in (context or {}).items():
            if info.wants(key):
                call_kwargs[key] = value
        try:
            return info.factory(**call_kwargs)
        except RecipeError as exc:
            if exc.key is None and where:  # the factory could not know its recipe key: add it
                raise type(exc)(f"{self.kind} {name!r}: {exc}", where) from exc
            raise
        except PluginError:
            raise
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"{self.kind} {name!r} (plugin {info.plugin!r}) rejected its arguments: {exc}", where)
