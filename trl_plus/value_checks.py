"""Checking the values a recipe gives a component against the annotations of its factory's
parameters (pydantic, strict), and how messages show those values: short, secret-free, with
a hint when YAML 1.1 read a value otherwise than its writer meant (``1e-3``, ``no``).

Used by :mod:`trl_plus.registry` (a component's keywords) and by the recipe's own checks.
A leaf of the import graph: it imports only the error classes, :mod:`trl_plus.protocols`
and :mod:`trl_plus.redact`.
"""

from __future__ import annotations

import collections.abc
import datetime
import difflib
import enum
import inspect
import math
import re
import reprlib
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .errors import RecipeError, RecipeProblems
from .protocols import CONTEXT_PARAMETERS
from .redact import looks_like_secret, redact_url, shape

# -- the values of recipe keywords ------------------------------------------------------------
#
# A factory's annotations say what a recipe may give it; pydantic checks a value against
# one in strict mode (a string is no bool or number, a float no int, a list no int), with
# the conversions YAML needs to write a value at all allowed (a list for a tuple or set, a
# string for a Path or an enum member, a mapping for a dataclass), and every float finite.

_SCALARS = (bool, int, float, str, bytes, type(None))
_PLAIN = (bool, int, float, str, bytes, type(None), datetime.date, datetime.datetime)


def _plain(value) -> bool:
    """Whether ``value`` is plain data, as YAML writes it (not an object built in Python)."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, dict):
        return all(isinstance(k, _PLAIN) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return False


def _loosened(annotation):
    """``annotation`` with ``Strict(False)`` on what YAML cannot write in the strict form."""
    from pydantic import Strict

    origin = typing.get_origin(annotation)
    if annotation in _SCALARS or annotation is Any or origin is typing.Literal \
            or isinstance(annotation, typing.TypeVar):
        return annotation
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        return typing.Annotated[(_loosened(base), *meta)]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_loosened(a) for a in typing.get_args(annotation))]
    if origin is not None:
        args = typing.get_args(annotation)
        if args and origin is not collections.abc.Callable:
            try:
                annotation = origin[tuple(a if a is Ellipsis or isinstance(a, list) else _loosened(a) for a in args)]
            except TypeError:
                pass
        return typing.Annotated[annotation, Strict(False)]
    if isinstance(annotation, type):
        return typing.Annotated[annotation, Strict(False)]
    return annotation


_PLURALS = {"a string": "strings", "an integer": "integers", "a number": "numbers",
            "true or false": "true/false values", "a mapping": "mappings", "a list": "lists"}


def _describe(annotation) -> str:
    """What an annotation asks for, in a recipe's words."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence):
        one = origin is not tuple or (len(args) == 2 and args[1] is Ellipsis)
        if not (args and one):
            return "a list"
        item = _describe(args[0])
        return f"a list of {_PLURALS.get(item, f'values ({item})')}"
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in annotation)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
            dict: "a mapping", list: "a list"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


_shorten = reprlib.Repr()
_shorten.maxstring, _shorten.maxother, _shorten.maxlist, _shorten.maxdict, _shorten.maxlevel = 80, 80, 6, 6, 3


def shown(value) -> str:
    """``value`` as a message shows it: short, and a string that looks like a credential by
    its shape only (``trl_plus.redact``; every ``TrlPlusError`` message is redacted too)."""
    if isinstance(value, str):
        if looks_like_secret(value):
            return repr(shape(value))
        if value.startswith(("http://", "https://")):
            value = redact_url(value)
    return _shorten.repr(value)


_EXPONENT = re.compile(r"^(?P<sign>[-+]?)(?P<int>\d+)(?:\.(?P<frac>\d*))?(?P<e>[eE])(?P<esign>[-+]?)(?P<exp>\d+)$")
_FALSE_WORDS, _TRUE_WORDS = ("no", "off", "false", "n"), ("yes", "on", "true", "y")


def _number_hint(text: str, integer: bool) -> str:
    """How to write ``text``, a string that a person meant as a number, so that YAML reads a
    number; "" when it is no number."""
    import yaml

    comma = re.fullmatch(r"[-+]?\d+,\d+", text) is not None
    try:
        number = float(text.replace(",", ".") if comma else text)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    try:
        read = yaml.safe_load(text)
    except yaml.YAMLError:
        read = None
    if isinstance(read, (int, float)) and not isinstance(read, bool):
        return " (a number in quotes is a string: write it without quotes)"
    m = _EXPONENT.match(text)
    if integer and number.is_integer() and abs(number) < 1e18:
        fixed = str(int(number))
    elif m:  # the writer's own form, with the decimal point and exponent sign YAML 1.1 wants
        fixed = f"{m['sign']}{m['int']}.{m['frac'] or '0'}{m['e']}{m['esign'] or '+'}{m['exp']}"
    else:
        fixed = yaml.safe_dump(number).splitlines()[0]  # as YAML 1.1 reads a float
    why = ("a decimal comma" if comma else
           "a number with an exponent needs a decimal point and a signed exponent" if m else
           "a leading zero" if re.match(r"[-+]?0\d", text) else "")
    return f" (YAML 1.1 reads {text} as a string{f': {why}' if why else ''}; write {fixed})"


def yaml_hint(value, wants_number: bool = False, wants_bool: bool = False, wants_text: bool = False,
              words: typing.Iterable[str] = (), integer: bool = False) -> str:
    """Why YAML may have read ``value`` as something else than its writer meant, and how to
    write it (``" (...)"``), or ``""``: ``1e-3`` is a string in YAML 1.1, ``no`` a boolean."""
    if isinstance(value, str) and wants_number:
        hint = _number_hint(value.strip(), integer)
        if hint:
            return hint
    if isinstance(value, str) and wants_bool and value.strip().lower() in _FALSE_WORDS + _TRUE_WORDS:
        truth = "true" if value.strip().lower() in _TRUE_WORDS else "false"
        return f" (a word in quotes is a string: write {truth} without quotes)"
    if isinstance(value, bool) and wants_text:
        choices = _TRUE_WORDS if value else _FALSE_WORDS
        word = next((w for w in choices if w in set(words)), choices[0])
        return (f" (YAML 1.1 reads the unquoted words {', '.join(choices[:3])} as the boolean "
                f"{str(value).lower()}: write \"{word}\" in quotes)")
    return ""


def accepted_kinds(annotation) -> tuple[set, list]:
    """The scalar types an annotation takes (``bool``, ``int``, ``float``, ``str``) and the
    words it accepts (enum values, literals)."""
    found, words = set(), []
    stack = [annotation]
    while stack:
        a = stack.pop()
        origin = typing.get_origin(a)
        if origin in (typing.Union, types.UnionType, typing.Annotated):
            stack.extend(typing.get_args(a)[:1] if origin is typing.Annotated else typing.get_args(a))
        elif origin is typing.Literal:
            words += [str(v) for v in typing.get_args(a)]
            found |= {type(v) for v in typing.get_args(a)}
        elif isinstance(a, type) and issubclass(a, enum.Enum):
            words += [str(m.value) for m in a]
            found.add(str)
        elif a in (bool, int, float, str):
            found.add(a)
    return found, words


def value_problems(annotation, value, adapter=None) -> list[tuple[tuple, str]]:
    """(location inside ``value``, message) for each way ``value`` does not fit
    ``annotation`` (see the comment above); [] when it fits or cannot be checked."""
    from pydantic import ValidationError

    adapter = adapter or _adapter(annotation)
    if adapter is None:
        return []
    try:
        adapter.validate_python(value)
        return []
    except ValidationError as exc:
        errors = exc.errors()
    except Exception:  # a validator of the plugin's own that fails oddly: not ours to judge
        return []
    kinds, words = accepted_kinds(annotation)
    hint = lambda v: yaml_hint(v, wants_number=bool({int, float} & kinds), wants_bool=bool in kinds,  # noqa: E731
                               wants_text=str in kinds and bool not in kinds, words=words,
                               integer=int in kinds and float not in kinds)
    if len(errors) > 1:  # the branches of a union: say what the annotation takes
        return [((), f"expected {_describe(annotation)}, got {shown(value)}{hint(value)}")]
    err = errors[0]
    what = {"bool_type": "expected true or false", "int_type": "expected an integer", "int_from_float":
            "expected an integer", "float_type": "expected a number", "finite_number": "expected a finite number",
            "string_type": "expected a string", "list_type": "expected a list", "dict_type": "expected a mapping",
            }.get(err["type"], err["msg"][:1].lower() + err["msg"][1:])
    loc = tuple(err["loc"])
    inner = err.get("input", value)
    if loc:  # an item inside a list or mapping: the hint from what the error asks for
        inner_hint = yaml_hint(inner, wants_number="number" in what or "integer" in what,
                               wants_bool="true or false" in what, wants_text="string" in what,
                               integer="integer" in what)
        return [(loc, f"{what}, got {shown(inner)}{inner_hint}")]
    return [((), f"{what}, got {shown(value)}{hint(value)}")]


_ADAPTERS: dict = {}


def _adapter(annotation):
    """A pydantic validator for ``annotation`` (cached), or None when pydantic cannot build one."""
    try:
        return _ADAPTERS[annotation]
    except (KeyError, TypeError):
        pass
    try:
        from pydantic import ConfigDict, TypeAdapter

        adapter = TypeAdapter(_loosened(annotation), config=ConfigDict(strict=True, allow_inf_nan=False))
    except Exception:
        try:  # a BaseModel, dataclass or TypedDict carries its own config
            from pydantic import TypeAdapter

            adapter = TypeAdapter(_loosened(annotation))
        except Exception:
            adapter = None
    try:
        _ADAPTERS[annotation] = adapter
    except TypeError:
        pass
    return adapter


_CHECKERS: dict = {}


def _checkers(factory) -> tuple[dict, Callable | None, set]:
    """``({parameter: check(value) -> [(loc, message)]}, check of **kwargs or None, names
    of the named parameters)`` for a factory's annotated parameters (cached per factory)."""
    try:
        return _CHECKERS[factory]
    except (KeyError, TypeError):
        pass
    checkers, rest, named = {}, None, set()
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    for p in sig.parameters.values() if sig is not None else ():
        if p.kind is not p.VAR_KEYWORD:
            named.add(p.name)
        annotation = _resolved(factory, p.annotation)
        if annotation is None or p.kind is p.VAR_POSITIONAL or p.name in CONTEXT_PARAMETERS:
            continue
        adapter = _adapter(annotation)
        if adapter is None:
            continue
        check = lambda value, a=annotation, ad=adapter: value_problems(a, value, ad)  # noqa: E731
        if p.kind is p.VAR_KEYWORD:
            rest = check
        else:
            checkers[p.name] = check
    try:
        _CHECKERS[factory] = (checkers, rest, named)
    except TypeError:
        pass
    return checkers, rest, named


def _resolved(factory, annotation):
    """A parameter's annotation as a type (a string one evaluated in the factory's module),
    or None when there is none or it cannot be evaluated."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    if isinstance(annotation, str):
        target = factory.__init__ if inspect.isclass(factory) else factory
        target = inspect.unwrap(getattr(target, "func", target))
        if not hasattr(target, "__globals__"):  # a callable object: its class's module
            target = getattr(type(target), "__call__", target)
        module = sys.modules.get(getattr(target, "__module__", None) or "")
        namespace = dict(getattr(target, "__globals__", None) or getattr(module, "__dict__", {}))
        try:
            annotation = eval(annotation, namespace)  # noqa: S307 (the plugin's own annotation text)
        except Exception:
            return None
    return annotation


def annotation_problems(fn, kwargs: Mapping[str, Any], where: str | None, label: str) -> list[tuple[str, str]]:
    checkers, rest, named = _checkers(fn)
    problems = []
    for key, value in kwargs.items():
        checker = checkers[key] if key in checkers else None if key in named else rest
        if checker is None or not _plain(value):
            continue
        for loc, message in checker(value):
            problems.append((_join(where, key, *loc), f"{label}: {message}"))
    return problems


def raise_problems(problems: list[tuple[str, str]]) -> None:
    if len(problems) == 1:
        raise RecipeError(problems[0][1], problems[0][0])
    if problems:
        raise RecipeProblems(problems)


def check_call_kwargs(fn, kwargs: Any, where: str, label: str) -> None:
    """The keywords a recipe gives a callable of its own (a ``python`` reward's ``kwargs``),
    checked before any call: each names a parameter ``fn`` takes (unless it takes
    ``**kwargs``), and its value fits the parameter's annotation, as for a factory (see
    :meth:`trl_plus.registry.ComponentInfo.check_values`). Raises :class:`RecipeError` under ``where.key``."""
    if not isinstance(kwargs, Mapping) or not kwargs:
        return
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    problems = []
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        problems += [(_join(where, key), f"{label} takes no keyword {key!r}.{did_you_mean(str(key), names)} "
                                         f"It takes: {', '.join(names) or '(none)'}")
                     for key in kwargs if key not in names]
    raise_problems(problems + annotation_problems(fn, kwargs, where, label))


def _join(where: str | None, key: str, *loc) -> str:
    out = f"{where}.{key}" if where else key
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" Did you mean: {close[0]}?" if close else ""
