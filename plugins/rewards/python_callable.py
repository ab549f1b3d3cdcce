"""Reward source: any Python callable, named ``module:attr`` or ``path/to/file.py:attr``."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
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
    except Exception as exc:  # the module itself raised while it was imported
        raise RecipeError(f"importing {module_ref!r} for {ref!r} raised {type(exc).__name__}: {exc}", "function") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RecipeError(f"{module_ref!r} has no attribute {attr!r}", "function")
        obj = getattr(obj, part)
    return obj


def python_source(function: str, kwargs: dict | None = None):
    """A Python callable as reward source; a class is instantiated with ``kwargs``."""
    obj = load_object(function)
    if inspect.isclass(obj):
        return obj(**(kwargs or {}))
    if not callable(obj):
        raise RecipeError(f"{function!r} is not callable", "function")
    fn = functools.partial(obj, **kwargs) if kwargs else obj
    return fn


@trl_plus.hookimpl
def trl_plus_register_reward_sources(register):
    register.add("python", python_source)
