"""``module:attr`` and ``file.py:attr`` references (a ``python`` reward source's
``function``), checked without running any of them: ``trl-plus validate --no-import``.

A leaf-ish module: the recipe loader (which rebases a reference's file against the
recipe's folder) and the built-in plugins (which check a reference without importing it)
both read references through here.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from .errors import RecipeError
from .value_checks import shown

# ``file.py:attr``: a Python file, relative to the recipe's folder until the recipe loads.
PY_FILE_REF = re.compile(r"^(?P<file>[^:]+\.py):(?P<attr>[\w.]+)$")
# ``module:attr``: an importable module (or a ``module.py`` beside the recipe).
PY_MODULE_REF = re.compile(r"^(?P<module>[A-Za-z_]\w*):(?P<attr>[\w.]+)$")


def check_python_ref(ref: Any, where: str = "function") -> None:
    """A ``module:attr`` or ``file.py:attr`` reference checked without running any of it
    (``trl-plus validate --no-import``): the module's file is found (``importlib``'s
    finders, no package imported) and its source, parsed with ``ast``, defines the
    attribute's first name at its top level (a def, class, assignment or import; a class
    also its next name). A module without Python source (built in, compiled) is only found.
    Raises :class:`RecipeError` under ``where``."""
    import ast

    if not isinstance(ref, str) or ":" not in ref:
        raise RecipeError(f"expected 'module:attr' or 'file.py:attr', got {shown(ref)}", where)
    module_ref, _, attr = ref.rpartition(":")
    if module_ref.endswith(".py"):
        origin = Path(module_ref).expanduser()
        if not origin.is_file():
            raise RecipeError(f"cannot find {module_ref!r} for {ref!r}: no such file", where)
    else:
        origin = _module_file(module_ref, ref, where)
        if origin is None:
            return  # found, but no source to read
    try:
        tree = ast.parse(origin.read_bytes(), filename=str(origin))
    except SyntaxError as exc:
        raise RecipeError(f"{origin} for {ref!r} is not valid Python: {exc.msg} (line {exc.lineno})", where) from None
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read {origin} for {ref!r}: {exc}", where) from None
    names = _top_level_names(tree.body)
    first, *rest = attr.split(".")
    if first not in names:
        if "*" in names or "__getattr__" in names:
            return  # a star import or a module __getattr__: only running it would tell
        public = sorted(n for n in names if not n.startswith("_"))
        close = difflib.get_close_matches(first, public, n=1)
        raise RecipeError(f"{module_ref!r} defines no {first!r} at its top level (read without importing it)."
                          + (f" Did you mean: {close[0]}?" if close else "")
                          + f" It defines: {', '.join(public[:20]) or 'nothing'}{' ...' if len(public) > 20 else ''}",
                          where)
    node = names[first]
    if rest and isinstance(node, ast.ClassDef):
        members = _top_level_names(node.body)
        if rest[0] not in members and not node.bases:
            raise RecipeError(f"class {first!r} in {module_ref!r} defines no {rest[0]!r} (read without importing it)",
                              where)


def _module_file(module_ref: str, ref: str, where: str) -> Path | None:
    """The source file of module ``module_ref``, found as ``import`` would find it but
    without importing it or its packages; None when it has no Python source."""
    import importlib.machinery
    import importlib.util
    import sys

    search, spec = None, None
    parts = module_ref.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        loaded = sys.modules.get(name)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else None
        try:
            if spec is None and i == 0:
                spec = importlib.util.find_spec(name)  # a top-level name: nothing is imported to find it
            elif spec is None:
                for finder in sys.meta_path:
                    find = getattr(finder, "find_spec", None)
                    spec = find(name, search) if find is not None else None
                    if spec is not None:
                        break
        except (ImportError, ValueError) as exc:
            raise RecipeError(f"cannot find module {name!r} for {ref!r}: {exc}", where) from None
        if spec is None:
            raise RecipeError(f"cannot find module {name!r} for {ref!r} (looked for it without importing anything)",
                              where)
        search = spec.submodule_search_locations
        if search is None and i < len(parts) - 1:
            raise RecipeError(f"cannot find module {module_ref!r} for {ref!r}: {name!r} is not a package", where)
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") and Path(origin).is_file() else None


def _top_level_names(body) -> dict:
    """The names a module (or class) body binds at its top level, also inside if/try/with
    blocks: name -> the statement ("*" for a star import)."""
    import ast

    names: dict = {}

    def targets(node, stmt):
        if isinstance(node, ast.Name):
            names.setdefault(node.id, stmt)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt, stmt)
        elif isinstance(node, ast.Starred):
            targets(node.value, stmt)

    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.setdefault(stmt.name, stmt)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                targets(target, stmt)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets(stmt.target, stmt)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                names.setdefault(alias.asname or alias.name.split(".")[0], stmt)
        elif isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While)) or type(stmt).__name__ == "TryStar":
            for block in ("body", "orelse", "finalbody"):
                names.update({k: v for k, v in _top_level_names(getattr(stmt, block, [])).items() if k not in names})
            for handler in getattr(stmt, "handlers", []):
                names.update({k: v for k, v in _top_level_names(handler.body).items() if k not in names})
    return names
