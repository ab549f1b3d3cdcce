"""Reward source: any Python callable, named ``module:attr`` or ``path/to/file.py:attr``."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path

import trl_plus
from trl_plus.errors import RecipeError


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
    """A callable as reward source, named by its reference in errors (``python: mod:fn``)."""

    def __init__(self, ref: str, fn):
        self.fn, self.trl_plus_ref = fn, f"python: {ref}"
        self.__name__ = ref.rpartition(":")[2].rpartition(".")[2]

    def __getattr__(self, name):  # the wrapped object's attributes stay reachable
        if name == "fn":
            raise AttributeError(name)
        return getattr(self.fn, name)

    def __repr__(self) -> str:
        return f"PythonSource({self.trl_plus_ref[len('python: '):]!r})"

    def __call__(self, prompts, completions, **columns):
        return self.fn(prompts, completions, **columns)


def python_source(function: str, kwargs: dict | None = None):
    """A Python callable as reward source; a class is instantiated with ``kwargs``."""
    obj = load_object(function)
    if inspect.isclass(obj):
        try:
            return PythonSource(function, obj(**(kwargs or {})))
        except (TypeError, ValueError):
            raise
        except Exception as exc:
            raise RecipeError(f"{function!r}({', '.join(kwargs or {})}) raised {type(exc).__name__}: {exc}{_where(exc)}") from exc
    if not callable(obj):
        raise RecipeError(f"{function!r} is not callable", "function")
    return PythonSource(function, functools.partial(obj, **kwargs) if kwargs else obj)


@trl_plus.hookimpl
def trl_plus_register_reward_sources(register):
    register.add("python", python_source)
