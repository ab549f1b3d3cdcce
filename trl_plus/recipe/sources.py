"""Where recipes come from: the shipped ones (``trl_plus.recipes``), a file named on the
command line, and ``--set KEY=VALUE`` overrides applied on top."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError
from .yaml_text import load_yaml


def shipped_recipes() -> dict[str, Path]:
    root = resources.files("trl_plus.recipes")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def find_recipe(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if stem in shipped and not path.parent.name:
        return shipped[stem]
    hint = difflib.get_close_matches(stem, list(shipped), n=1)
    raise RecipeError(
        f"no recipe file {str(name_or_path)!r} and no shipped recipe of that name."
        + (f" Did you mean: {hint[0]}?" if hint else "")
        + f" Shipped: {', '.join(sorted(shipped))}"
    )


def parse_override(text: str) -> tuple[list[str | int], Any]:
    if "=" not in text:
        raise RecipeError(f"--set expects KEY=VALUE, got {text!r}")
    key, _, value = text.partition("=")
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    try:
        parsed = load_yaml(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    except RecipeError as exc:
        raise RecipeError(f"--set {key.strip()}=...: {exc}") from None
    return parts, parsed


def apply_override(raw: dict, text: str) -> None:
    parts, value = parse_override(text)
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            if not isinstance(part, int) or part > len(node):
                raise RecipeError(f"--set {text!r}: index {part!r} out of range", ".".join(map(str, parts[: i + 1])))
            if part == len(node):  # one past the end appends a new item
                node.append([] if isinstance(nxt, int) else {})
            node = node[part]
        else:
            if part not in node or node[part] is None:
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last > len(node):
            raise RecipeError(f"--set {text!r}: index {last!r} out of range", ".".join(map(str, parts)))
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise RecipeError(f"--set {text!r}: {'.'.join(map(str, parts[:-1]))} is not a mapping or list")
