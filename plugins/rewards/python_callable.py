"""Reward source: any Python callable, named ``module:attr`` or ``path/to/file.py:attr``."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import sys
import traceback
from pathlib import Path

import trl_plus
from trl_plus.errors import RecipeError
from trl_plus.reward_checks import call_with_deadline

DEFAULT_TIMEOUT = 600.0  # seconds one call (one batch) may take; a hung reward ends the run with a message


def load_object(ref: str):
    """The object named by ``module:attr`` (dotted attr allowed) or ``file.py:attr``.

    A file's folder goes on ``sys.path`` (last), so that the file can import the modules
    beside it, as a script does.
    """
    if not isinstance(ref, str) or ":" not in ref:
        raise RecipeError(f"expected 'module:attr' or 'file.py:attr', got {ref!r}", "function")
    module_ref, _, attr = ref.rpartition(":")
    try:
        if module_ref.endswith(".py"):
            path = Path(module_ref).resolve()
            spec = importlib.util.spec_from_file_location(f"trl_plus_user_{path.stem}", path)
            if spec is None or not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            if str(path.parent) not in sys.path:
                # appended, not first: a file beside the recipe never shadows an installed package
                sys.path.append(str(path.parent))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_ref)
    except (ImportError, FileNotFoundError) as exc:
        raise RecipeError(f"cannot import {module_ref!r} for {ref!r}: {exc}", "function") from exc
    except (Exception, SystemExit) as exc:  # the module itself raised while it was imported
        raise RecipeError(f"importing {module_ref!r} for {ref!r} raised {type(exc).__name__}: {exc}{_where(exc)}",
                          "function") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RecipeError(f"{module_ref!r} has no attribute {attr!r}", "function")
        obj = getattr(obj, part)
    return obj


def _where(exc: BaseException) -> str:
    """`` (at file.py line N)``: the innermost frame of a traceback, or nothing."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" (at {Path(frames[-1].filename).name} line {frames[-1].lineno})" if frames else ""


class PythonSource:
    """A callable as reward source, named by its reference in errors (``python: mod:fn``).

    Each call is given at most ``timeout`` seconds (None: no limit; see
    ``reward_checks.call_with_deadline``): a reward that never returns ends the run with a
    message naming it, instead of holding it for ever."""

    def __init__(self, ref: str, fn, timeout: float | None = DEFAULT_TIMEOUT):
        self.fn, self.trl_plus_ref, self.timeout = fn, f"python: {ref}", timeout
        self.__name__ = ref.rpartition(":")[2].rpartition(".")[2]

    def __getattr__(self, name):  # the wrapped object's attributes stay reachable
        if name in ("fn", "timeout"):
            raise AttributeError(name)
        return getattr(self.fn, name)

    def __repr__(self) -> str:
        return f"PythonSource({self.trl_plus_ref[len('python: '):]!r})"

    def __call__(self, prompts, completions, **columns):
        return call_with_deadline(self.fn, (prompts, completions), columns, timeout=self.timeout,
                                  what=f"python reward {self.trl_plus_ref[len('python: '):]}")


def _checked_timeout(timeout) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise RecipeError(f"must be a number of seconds > 0 (or null for no limit), got {timeout!r}", "timeout")
    return float(timeout)


def python_source(function: str, kwargs: dict | None = None, timeout: float | None = DEFAULT_TIMEOUT):
    """A Python callable as reward source; a class is instantiated with ``kwargs``.

    :param timeout: seconds one call (one batch of completions) may take before the run
        stops with an error naming this source (default 600; null: no limit).
    """
    timeout = _checked_timeout(timeout)
    obj = load_object(function)
    from trl_plus.value_checks import check_call_kwargs

    check_call_kwargs(obj, kwargs, "kwargs", f"python reward {function}")  # names and annotated types, before any call
    if inspect.isclass(obj):
        try:
            return PythonSource(function, obj(**(kwargs or {})), timeout)
        except (TypeError, ValueError):
            raise
        except Exception as exc:
            raise RecipeError(f"{function!r}({', '.join(kwargs or {})}) raised {type(exc).__name__}: {exc}{_where(exc)}") from exc
    if not callable(obj):
        raise RecipeError(f"{function!r} is not callable", "function")
    return PythonSource(function, functools.partial(obj, **kwargs) if kwargs else obj, timeout)


def _static_check(function: str, **_):
    """``trl-plus validate --no-import``: ``function``'s module is found and defines the
    attribute, read without importing (running) it."""
    from trl_plus.python_refs import check_python_ref

    check_python_ref(function, "function")


python_source.trl_plus_static_check = _static_check  # trl_plus.registry.STATIC_CHECK


@trl_plus.hookimpl
def trl_plus_register_reward_sources(register):
    register.add("python", python_source)
