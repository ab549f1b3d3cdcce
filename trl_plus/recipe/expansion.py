"""How large a recipe is once its YAML aliases are written out, checked before anything
walks it: an alias "bomb" of a few lines expands to billions of values, and a value that
contains itself (``&a [*a]``) never ends."""

from __future__ import annotations

import copy

import yaml

from ..errors import RecipeError
from .problems import format_loc

# The most values (mappings, lists and scalars, counted as written out: through YAML
# aliases too) a recipe may hold. A recipe is a page of settings; an alias "bomb" of a few
# lines expands to billions of values, and every walk over the recipe would hang on it.
MAX_RECIPE_VALUES = 100_000


def node_items(node) -> list | None:
    """(path part, child) of a YAML node; None for a scalar."""
    if isinstance(node, yaml.MappingNode):
        return [(k.value if isinstance(k, yaml.ScalarNode) else "?", v) for k, v in node.value]
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return None


def data_items(value) -> list | None:
    """(path part, child) of a recipe mapping or list; None for anything else."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    return None


class _Endless(Exception):
    def __init__(self, loc, obj):
        self.loc, self.obj = loc, obj


def expanded_sizes(root, items) -> dict:
    """Every container's size (values below it, counted as written out), by ``id``; each
    container is counted once however often an alias repeats it, so this takes as long as
    the text is long. Raises :class:`_Endless` for a container that holds itself."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(obj, loc):
        children = items(obj)
        if children is None:
            return 1
        key = id(obj)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Endless(loc, obj)
        active.add(key)
        total = 1 + sum(size(child, loc + (part,)) for part, child in children)
        active.discard(key)
        sizes[key] = total
        return total

    size(root, ())
    return sizes


def check_expansion(root, items, line=lambda obj: None) -> None:
    """Refuse a recipe that writes out to more than ``MAX_RECIPE_VALUES`` values, or holds
    itself (``&a [*a]``), naming the key where it happens."""

    def at(loc, obj):
        n = line(obj)
        return f"{format_loc(loc) or 'the recipe'}{f' (line {n})' if n else ''}"

    try:
        sizes = expanded_sizes(root, items)
    except _Endless as exc:
        raise RecipeError(f"{at(exc.loc, exc.obj)} contains itself through a YAML alias (an endless value): "
                          "write the values out") from None
    except RecursionError:
        raise RecipeError("the recipe is nested too deeply to read (thousands of levels)") from None
    total = sizes.get(id(root), 1)
    if total <= MAX_RECIPE_VALUES:
        return
    loc, obj = (), root
    while True:  # down to the smallest value that is too large alone
        big = [(part, child) for part, child in items(obj) or () if sizes.get(id(child), 1) > MAX_RECIPE_VALUES]
        if not big:
            break
        part, obj = big[0]
        loc += (part,)
    raise RecipeError(
        f"{at(loc, obj)} expands to {sizes.get(id(obj), 1):,} values (YAML aliases, *name, repeat what they "
        f"point to); a recipe may hold at most {MAX_RECIPE_VALUES:,}: write fewer values, or put data in a file"
    )


def written_out(value):
    """A copy of a recipe in which nothing is shared: what a YAML alias repeated becomes a
    copy of its own, so that ``--set`` and path resolution change one place only."""
    if isinstance(value, dict):
        return {k: written_out(v) for k, v in value.items()}
    if isinstance(value, list):
        return [written_out(v) for v in value]
    return copy.deepcopy(value)
