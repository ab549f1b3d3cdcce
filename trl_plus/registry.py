"""Typed registers that plugins fill, and the lookups recipes make in them.

A registration hook receives a :class:`Register` (the core's implementation of
:class:`trl_plus.protocols.Register`); the components of one kind land in a
:class:`Registry`, where a recipe's spec is looked up by name and its keywords are checked
(names here, values against the factory's annotations in :mod:`trl_plus.value_checks`).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import protocols
from .errors import PluginError, RecipeError, RecipeProblems, UnknownComponentError
from .protocols import CONTEXT_PARAMETERS
from .value_checks import annotation_problems, did_you_mean, raise_problems

_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")

# A factory that imports or runs code the recipe names (the ``python`` reward source) sets
# this attribute to a function taking the same keywords, which checks them without running
# anything (the module is found, the attribute defined); ``trl-plus validate --no-import``
# calls it instead of the factory.
STATIC_CHECK = "trl_plus_static_check"
_NO_IMPORTS = contextvars.ContextVar("trl_plus_no_imports", default=False)


@contextlib.contextmanager
def no_imports():
    """Within the block, a dry run (recipe validation) imports no module a recipe names:
    factories with a static check (:data:`STATIC_CHECK`) are checked by it instead."""
    token = _NO_IMPORTS.set(True)
    try:
        yield
    finally:
        _NO_IMPORTS.reset(token)


def imports_allowed() -> bool:
    return not _NO_IMPORTS.get()


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

    def check_values(self, kwargs: Mapping[str, Any], where: str | None = None) -> None:
        """Each recipe value against the factory's annotation of its parameter (a ``**kwargs``
        annotation holds for the keys it takes): strict, so that ``"false"`` is no bool and
        ``[32]`` no int, and every float finite. Unannotated parameters, values built in
        Python (not plain YAML data) and annotations pydantic cannot check are left alone.
        Raises :class:`RecipeError` (several: :class:`RecipeProblems`) under ``where.key``."""
        raise_problems(annotation_problems(self.factory, kwargs, where, f"{self.kind} {self.name!r}"))

    def wants(self, parameter: str) -> bool:
        try:
            return parameter in inspect.signature(self.factory).parameters
        except (TypeError, ValueError):
            return False


# Kinds whose entries are descriptors (a protocols class), not factories.
_DESCRIPTORS = {"trainer kind": "TrainerKind", "recipe section": "RecipeSection"}


class Register:
    """What a registration hook receives: ``register.add(name, factory)`` (the contract:
    :class:`trl_plus.protocols.Register`). Knows which plugin it was given to, so that
    errors name it."""

    def __init__(self, registry: Registry, plugin: str):
        self._registry = registry
        self._plugin = plugin

    @property
    def kind(self) -> str:
        return self._registry.kind

    def add(self, name: str, factory: Callable[..., Any] | protocols.TrainerKind | protocols.RecipeSection, *,
            description: str | None = None) -> None:
        """Add a component under ``name``; ``factory(**recipe_kwargs)`` builds it (for trainer
        kinds and recipe sections, the descriptor itself)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(
                f"plugin {self._plugin!r} registered a {self.kind} with an invalid name {name!r}: "
                "use lower-case letters, digits, '_', '-' or '.', starting with a letter"
            )
        descriptor = _DESCRIPTORS.get(self.kind)
        if descriptor is not None:
            expected = getattr(protocols, descriptor)
            if not isinstance(factory, expected):
                raise PluginError(
                    f"plugin {self._plugin!r} registered {self.kind} {name!r} as {factory!r}: "
                    f"expected a trl_plus.protocols.{descriptor}"
                )
            self._add(name, factory, description or factory.description)
            return
        if not callable(factory):
            raise PluginError(
                f"plugin {self._plugin!r} registered {self.kind} {name!r} with a factory that is not callable: "
                f"{factory!r}"
            )
        self._add(name, factory, description or inspect.getdoc(factory) or "")

    def _add(self, name: str, factory: Any, doc: str) -> None:
        existing = self._registry._items.get(name)
        if existing is not None:
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin {existing.plugin!r} and by plugin "
                f"{self._plugin!r}; block one of them with TRL_PLUS_BLOCK_PLUGINS"
            )
        self._registry._items[name] = ComponentInfo(self.kind, name, factory, self._plugin, doc.split("\n")[0])


def _within(where: str, key: str | None) -> str:
    """``key`` (a component's own keyword, ``kwargs.chars``) under the recipe key ``where``."""
    if not key:
        return where
    return key if key == where or key.startswith((f"{where}.", f"{where}[")) else f"{where}.{key}"


class Registry:
    """The components of one kind, by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, ComponentInfo] = {}

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[ComponentInfo]:
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
        info.check_values(kwargs, where)
        return info

    def create(self, name: str, kwargs: Mapping[str, Any], where: str | None = None, context: Mapping | None = None):
        info = self.check_kwargs(name, kwargs, where)
        call_kwargs = dict(kwargs)
        for key, value in (context or {}).items():
            if info.wants(key):
                call_kwargs[key] = value
        try:
            return info.factory(**call_kwargs)
        except RecipeProblems as exc:  # several, under the factory's own keywords: under the recipe's keys
            if not where:
                raise
            raise RecipeProblems([(_within(where, key), message) for key, message in exc.problems]) from exc
        except RecipeError as exc:
            if exc.key is None and where:  # the factory could not know its recipe key: add it
                raise type(exc)(f"{self.kind} {name!r}: {exc}", where) from exc
            raise
        except PluginError:
            raise
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"{self.kind} {name!r} (plugin {info.plugin!r}) rejected its arguments: {exc}", where)
