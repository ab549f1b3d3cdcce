"""Relative paths in a recipe become absolute when it loads, so nothing downstream re-bases
them: a path written in the recipe against the recipe's folder, one given with ``--set``
against the working directory.

Which keys hold paths, each section declares (:class:`trl_plus.protocols.RecipeSection`:
``path_keys``, ``data_keys``, ``file_keys``, ``references``): the core its own sections
below, a plugin its sections when it registers them (``stages.sft.base`` is the
pipeline's, ``eval.cache`` the evaluation's). A name that is no local path (a hub id,
``tiny:...``) is left as it is: see ``trl_plus.loading.local_path``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..protocols import RecipeSection
from ..python_refs import PY_FILE_REF, PY_MODULE_REF
from .trainer_config import CRITIC_INIT_WORDS

# The core's sections: model folders, data files, and component specs (``file.py:attr``
# references, a reward model's folder).
CORE_PATHS = (
    RecipeSection("model", path_keys=("name_or_path", "tokenizer", "ref_model")),
    RecipeSection("data", data_keys=("train", "eval")),
    *(RecipeSection(key, references=True) for key in ("rewards", "kl", "filters", "rollout_filters")),
)
# Words a path key may hold instead of a path (``critic_init: policy``): never re-based.
_WORDS = {"critic_init": CRITIC_INIT_WORDS}
MISSING = object()


def trainer_paths(kind: str) -> RecipeSection:
    """The path fields of a trainer's configuration section: the critic's starting model
    (PPO's ``critic_init``), the reference log-prob cache (DPO's ``ref_logps_cache``)."""
    return RecipeSection(kind, path_keys=("critic_init",), file_keys=("ref_logps_cache",))


def at(node: Any, loc: tuple) -> Any:
    """The value at key path ``loc``, or :data:`MISSING`."""
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return MISSING
    return node


def _child(node: Any, key) -> Any:
    try:
        return node[key]
    except (KeyError, IndexError, TypeError):
        return None


def _places(raw: dict, section: str, dotted: str) -> list[tuple[Any, Any, tuple]]:
    """(parent, key, location) of every place a declared key names: ``*`` stands for every
    mapping value or list item."""
    places = [(raw, section, (section,))]
    for part in dotted.split("."):
        found = []
        for parent, key, loc in places:
            node = _child(parent, key)
            if part == "*":
                keys = list(node) if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else ()
            else:
                keys = (part,) if isinstance(node, dict) else ()
            found += [(node, k, loc + (k,)) for k in keys]
        places = found
    return places


def resolve_paths(raw: dict, base: Path, sections: Iterable[RecipeSection], only=None) -> None:
    """Relative paths in ``raw`` become absolute, against ``base``, at the keys ``sections``
    declare; ``file.py:attr`` references (and ``module:attr`` ones whose ``module.py`` is in
    ``base``: a module beside the recipe) in sections that hold component specs.

    :param only: ``only(location) -> bool``: resolve just those locations (the ones
        ``--set`` gave, which resolve against the working directory instead).
    """
    from ..model_refs import local_path

    def put(node, key, loc, files=False, always=False):
        value = _child(node, key)
        if not isinstance(value, str) or (only and not only(loc)) or value in _WORDS.get(key, ()):
            return
        if always and value and not Path(value).expanduser().is_absolute():
            node[key] = os.path.abspath(base / Path(value).expanduser())
            return
        path = local_path(value, base, files=files)
        if path is not None:
            node[key] = str(path)

    data = raw.get("data")
    if isinstance(data, dict):
        for split in ("train", "eval"):
            if isinstance(data.get(split), str):  # a split written as its path
                data[split] = {"path": data[split]}
    sections = list(sections)
    for section in sections:
        for keys, how in ((section.path_keys, {}), (section.data_keys, {"files": True}),
                          (section.file_keys, {"always": True})):
            for dotted in keys:
                for parent, key, loc in _places(raw, section.key, dotted):
                    entry = _child(parent, key)
                    if "files" in how and isinstance(entry, dict):  # a data entry given as a mapping
                        put(entry, "path", loc + ("path",), **how)
                    else:
                        put(parent, key, loc, **how)

    def fix(node, loc):
        if isinstance(node, dict):
            if node.get("name") == "reward_model":  # a reward source or judge: its model folder
                put(node, "model", loc + ("model",))
            for k, v in list(node.items()):
                node[k] = fix(v, loc + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                node[i] = fix(v, loc + (i,))
        elif isinstance(node, str) and not (only and not only(loc)):
            m = PY_FILE_REF.match(node)
            if m and not Path(m["file"]).expanduser().is_absolute():
                return f"{os.path.abspath(base / Path(m['file']).expanduser())}:{m['attr']}"
            m = PY_MODULE_REF.match(node)
            if m and (base / f"{m['module']}.py").is_file():
                # a module beside the recipe, as a script imports the modules beside it
                return f"{os.path.abspath(base / (m['module'] + '.py'))}:{m['attr']}"
        return node

    for section in sections:
        if section.references and section.key in raw:
            raw[section.key] = fix(raw[section.key], (section.key,))
