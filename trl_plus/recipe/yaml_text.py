"""Reading a recipe's YAML text: plain data only (``yaml.SafeLoader``: no tags that build
Python objects), no key written twice in one mapping, and no alias that expands beyond
``MAX_RECIPE_VALUES`` values (:mod:`.expansion`); every recipe is read through
:func:`read_yaml`."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import RecipeError, RecipeProblems
from .expansion import check_expansion, node_items
from .problems import format_loc

_MERGE_TAG = "tag:yaml.org,2002:merge"


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only, no Python objects) for recipes; use
    :func:`read_yaml`, which also refuses duplicate keys and bounds what aliases expand to."""


def _duplicate_keys(root, loader, source=None) -> list[tuple[str, str]]:
    """(key path, message) for every key written twice in one mapping (a merge key, ``<<``,
    may be overridden: that is what it is for)."""
    found, seen_nodes = [], set()

    def walk(node, loc):
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag != _MERGE_TAG and isinstance(key_node, yaml.ScalarNode):
                    key, line = loader.construct_object(key_node), key_node.start_mark.line + 1
                    try:
                        first = lines.get(key)
                        lines.setdefault(key, line)
                    except TypeError:  # an unhashable key: construction says so
                        first = None
                    if first is not None:
                        found.append((format_loc(loc + (key,)),
                                      f"written twice in one mapping{f' of {source}' if source else ''} "
                                      f"({f'lines {first} and {line}' if first != line else f'both on line {line}'}); "
                                      "YAML would silently keep only the last: delete one"))
                walk(value_node, loc + (key_node.value if isinstance(key_node, yaml.ScalarNode) else "?",))
        elif isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                walk(child, loc + (i,))

    walk(root, ())
    return found


def load_yaml(text: str, source=None):
    """``text`` as plain data (``yaml.SafeLoader``), refused with a :class:`RecipeError` when a
    key is written twice in one mapping or aliases expand it beyond ``MAX_RECIPE_VALUES``
    values; both are checked on the parsed nodes, before anything is built or walked.
    Raises ``yaml.YAMLError`` for text that is not YAML."""
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node, node_items, lambda n: n.start_mark.line + 1)
        duplicates = _duplicate_keys(node, loader, source)
        if duplicates:
            raise RecipeProblems(duplicates)
        return loader.construct_document(node)
    except RecursionError:
        raise RecipeError("the recipe is nested too deeply to read (thousands of levels)") from None
    finally:
        loader.dispose()


def read_yaml(text: str, source: str | Path | None = None):
    """A recipe's YAML text as plain data: every recipe is read through here (see
    :func:`load_yaml`); errors name ``source``."""
    try:
        return load_yaml(text, source)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source or 'the recipe'}: not valid YAML: {exc}") from None
    except RecipeProblems:
        raise
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}" if source else str(exc)) from None
