"""What is wrong with a recipe, in words: the one translator of pydantic's errors (key
paths, did-you-mean, the allowed keys), and :class:`Problems`, which collects every
problem so that one run of ``trl-plus validate`` reports all of them.

Every section uses these: the core's, the pipeline's ``stages:`` and ``report:``, the
evaluation's ``eval:``.
"""

from __future__ import annotations

import contextlib
import difflib
import typing
from collections.abc import Iterable

from pydantic import BaseModel, ValidationError

from ..errors import RecipeError, RecipeProblems, TrlPlusError
from ..value_checks import shown, yaml_hint


def format_loc(loc: Iterable, dotted_indices: bool = False) -> str:
    """A key path as messages write it: ``rewards[0].weight`` (``dotted_indices``:
    ``stages.dpo.betas.0``, as ``--set`` writes it)."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not dotted_indices:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The keys ``model`` allows at a location inside it (for did-you-mean)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = _model_of(field.annotation) if field is not None else None
        if model is None:
            return []
    return list(model.model_fields) if model is not None else []


def _union_member(part) -> bool:
    """A part of pydantic's location that names the member of a union it tried (``str``,
    ``dict[str,any]``, ``function-after[...]``), not a key."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part)


def unknown_key(name: str, allowed: list[str]) -> str:
    """The message for a key that is not among ``allowed``."""
    hint = difflib.get_close_matches(name, allowed, n=1)
    return (f"unknown key {name!r}." + (f" Did you mean: {hint[0]}?" if hint else "")
            + f" Allowed: {', '.join(allowed)}")


def pydantic_problems(exc: ValidationError, model: type[BaseModel], prefix: tuple = (),
                      dotted_indices: bool = False) -> list[tuple[str, str]]:
    """(key, message) for every error pydantic found validating ``model`` at ``prefix``:
    an unknown key with did-you-mean and the allowed keys, a missing key, a wrong value with
    what was given (and how YAML may have misread it)."""
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not _union_member(p))
        key = format_loc(prefix + loc, dotted_indices)
        if err["type"] == "extra_forbidden":
            out.append((key, unknown_key(str(loc[-1]), fields_at(model, loc[:-1]))))
        elif err["type"] == "missing":
            out.append((key, "missing required key"))
        elif err["type"] == "value_error" and "got" in err["msg"]:
            out.append((key, err["msg"].removeprefix("Value error, ")))  # the validator said what it got
        else:
            kind = err["type"].partition("_")[0]
            hint = yaml_hint(err.get("input"), wants_number=kind in ("int", "float"), wants_bool=kind == "bool",
                             wants_text=kind == "string", integer=kind == "int")
            message = err["msg"].removeprefix("Value error, ")
            out.append((key, f"{message} (got {shown(err.get('input'))}){hint}"))
    return out


class Problems:
    """What is wrong with a recipe, collected so that one run reports all of it."""

    def __init__(self):
        self.items: list[tuple[str | None, str]] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, key: str | None, message: str) -> None:
        if (key, message) not in self.items:
            self.items.append((key, message))

    def add_error(self, where: str | None, exc: BaseException) -> None:
        """An error raised while checking ``where``: under its own key when that lies
        within ``where``, else under ``where`` with its whole text."""
        if isinstance(exc, RecipeProblems):
            for key, message in exc.problems:
                self.add(key, message)
            return
        key = getattr(exc, "key", None)
        if isinstance(exc, RecipeError) and key and (where is None or key == where or key.startswith((f"{where}.", f"{where}["))):
            self.add(key, str(exc).removeprefix(f"{key}: "))
            return
        message = str(exc).removeprefix(f"{where}: ") if where else str(exc)  # texts often start with their key
        if not isinstance(exc, TrlPlusError):
            message = f"{type(exc).__name__}: {message}"
        self.add(where, message)

    def add_validation(self, exc: ValidationError, model: type[BaseModel], prefix: tuple = (),
                       dotted_indices: bool = False) -> None:
        """Every error of a pydantic validation of ``model`` at ``prefix``."""
        for key, message in pydantic_problems(exc, model, prefix, dotted_indices):
            self.add(key, message)

    @contextlib.contextmanager
    def check(self, where: str | None = None):
        """Record an error raised in the block instead of raising it."""
        try:
            yield
        except Exception as exc:
            self.add_error(where, exc)

    def under(self, prefix: str) -> bool:
        return any(k and (k == prefix or k.startswith((f"{prefix}.", f"{prefix}["))) for k, _ in self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise RecipeProblems(self.items)
