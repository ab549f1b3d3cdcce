"""A name a recipe gives for a model (or a data file): a local path or a hub id, checked
before anything loads: a ``tiny:`` name that exists, a folder that holds a model (or an
adapter whose base can be found), a hub id that is valid and, with the hub offline,
cached. Loading itself is ``trl_plus.loading``'s.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RecipeError


def check_model_name(name: str, where: str) -> None:
    """Fail early on a ``tiny:`` name that does not exist or a local folder that is missing."""
    from .tiny import TINY_KINDS, TINY_PREFIX

    if name.startswith(TINY_PREFIX):
        if name[len(TINY_PREFIX) :] not in TINY_KINDS:
            choices = ", ".join(TINY_PREFIX + k for k in TINY_KINDS)
            raise RecipeError(f"unknown tiny model {name!r}; choose one of {choices}", where)
    elif name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().exists():
        raise RecipeError(f"no such model folder: {name!r}", where)


# -- local path or hub id ------------------------------------------------------------------
#
# A name is a local path when it exists (against its base folder), or when only a path
# can look like it: an explicit "/", "./", "../" or "~" start, more than one "/" (a hub
# id has at most one), or, for data, a file suffix. Anything else is taken for a hub id
# ("gpt2", "org/name"), which a local folder of the same name still shadows.

_TRUE = {"1", "ON", "YES", "TRUE"}


def _explicit_path(name: str, files: bool) -> bool:
    if name in (".", "..") or name.startswith(("/", "./", "../", "~", ".\\", "..\\")):
        return True
    if name.count("/") > 1 or "\\" in name:
        return True
    if not files:
        return False
    from .data.files import file_format

    return file_format(name) is not None


def local_path(name: str, base_dir: str | Path | None = None, files: bool = False) -> Path | None:
    """The absolute local path ``name`` denotes (relative names against ``base_dir``, the
    working directory by default), or None when it is a hub id, a ``tiny:`` name or a URL.

    :param files: ``name`` may be a data file, so a file suffix marks it as a path.
    """
    from .tiny import TINY_PREFIX

    if not isinstance(name, str) or not name or name.startswith(TINY_PREFIX) or "://" in name:
        return None
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = Path(base_dir if base_dir is not None else Path.cwd()) / path
    path = Path(os.path.abspath(path))
    if path.exists() or _explicit_path(name, files):
        return path
    return None


def hub_offline() -> bool:
    """The hub is off limits (``HF_HUB_OFFLINE``), read now rather than at import time."""
    if any(os.environ.get(var, "").upper() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_id_problem(name: str) -> str | None:
    """Why ``name`` is not a valid hub repo id, or None when it is one."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as exc:
        return str(exc).split("\n")[0]
    return None


def hub_cached(repo_id: str, repo_type: str = "model") -> bool:
    """Whether the local hub cache (or, for a dataset, the ``datasets`` cache) holds ``repo_id``."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    if folder.is_dir() and any(folder.iterdir()):
        return True
    if repo_type == "dataset":
        from datasets import config

        # datasets keeps what it prepared from a hub dataset as <namespace>___<name>.
        prepared = Path(config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")
        return prepared.is_dir()
    return False


def model_folder_problem(path, probe_hub: bool = False) -> str | None:
    """What keeps the local folder ``path`` from loading as a model, or None: it holds
    neither a saved model (``config.json`` with a ``model_type``) nor a PEFT adapter
    (``adapter_config.json``), or it holds an adapter whose base model is missing (a
    folder that is not there or holds no model, a hub id not in the cache with the hub
    offline). Not a folder: None (a hub id or a ``tiny:`` name is checked elsewhere)."""
    import json

    folder = Path(path)
    if not folder.is_dir():
        return None
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        try:
            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        except (ValueError, AttributeError) as exc:
            return f"the adapter's {adapter} is not a JSON object ({exc})"
        if not isinstance(base, str) or not base:
            return f"the adapter in {folder} names no base model (base_model_name_or_path in adapter_config.json)"
        try:
            found = resolve_model_ref(base, "base_model_name_or_path", probe_hub=probe_hub)
        except RecipeError as exc:
            problem = str(exc)[len(exc.key) + 2 :] if exc.key else str(exc)
            return (f"the adapter in {folder} is for base model {base!r}, which cannot be found ({problem}); put the "
                    "base model there, or set base_model_name_or_path in its adapter_config.json")
        inner = model_folder_problem(found) if Path(found).is_dir() else None
        return f"the adapter in {folder} is for base model {base!r}, but {inner}" if inner else None
    config = folder / "config.json"
    if not config.is_file():
        hint = ""
        checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: (len(p.name), p.name))
        if checkpoints:
            hint = f"; it holds checkpoints: give one, {checkpoints[-1]}"
        elif any(folder.glob("*/config.json")) or any(folder.glob("*/adapter_config.json")):
            inner = next(p.parent for p in sorted(folder.glob("*/*config.json")))
            hint = f"; a model is one folder down: {inner}"
        return (f"the folder {str(folder)!r} holds no model: neither config.json (a saved model) nor "
                f"adapter_config.json (a PEFT adapter){hint}")
    try:
        settings = json.loads(config.read_text())
    except ValueError as exc:
        return f"{config} is not valid JSON ({exc})"
    if not isinstance(settings, dict) or "model_type" not in settings:
        return f"{config} is not a transformers model config (it has no model_type): the folder holds no model"
    return None


def resolve_model_ref(
    name: str,
    where: str,
    base_dir: str | Path | None = None,
    repo_type: str = "model",
    probe_hub: bool = False,
    lookup: bool = True,
    check_folder: bool = False,
) -> str:
    """``name`` as a loader should get it: an absolute folder (or file) that exists, a
    ``tiny:`` name, or a hub id; raises :class:`RecipeError` naming ``where`` otherwise.

    A missing local path names the folder it was looked up in. A hub id must be valid;
    with the hub offline it must be in the local cache. ``probe_hub`` asks the hub about an
    uncached id (so a mistyped relative path is not reported as a hub connection error).
    ``lookup=False``: a relative name is not looked for on disk (a loaded recipe's paths
    are absolute already: what is still relative was found to be no local path).
    ``check_folder``: a local model folder must hold a model (:func:`model_folder_problem`).
    """
    from .tiny import TINY_PREFIX

    noun = "dataset" if repo_type == "dataset" else "model"
    if not isinstance(name, str) or not name:
        raise RecipeError(f"expected a local path or a hub id, got {name!r}", where)
    if name.startswith(TINY_PREFIX):
        check_model_name(name, where)
        return name
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    absolute = Path(name).expanduser().is_absolute()
    path = local_path(name, base, files=repo_type == "dataset") if lookup or absolute else None
    looked = "" if absolute or not lookup else f" (looked in {base})"
    if path is not None:
        if not path.exists():
            what = "model folder" if noun == "model" else "dataset file or folder"
            raise RecipeError(f"no such {what}: {name!r}{looked}", where)
        if check_folder and repo_type == "model":
            problem = model_folder_problem(path, probe_hub=probe_hub)
            if problem:
                raise RecipeError(problem, where)
        return str(path)
    problem = hub_id_problem(name)
    if problem is not None:
        raise RecipeError(f"no {noun} folder {name!r}{looked}, and not a valid hub id: {problem}", where)
    if hub_cached(name, repo_type):
        return name
    if hub_offline():
        raise RecipeError(
            f"no {noun} folder {name!r}{looked}, and hub {noun} {name!r} is not in the local cache: "
            "the hub is offline (HF_HUB_OFFLINE=1)",
            where,
        )
    if probe_hub:
        from huggingface_hub import repo_exists

        try:
            found = repo_exists(name, repo_type=repo_type)
        except Exception as exc:  # no connection, proxy, server error: all say the same here
            raise RecipeError(
                f"no {noun} folder {name!r}{looked}, and the hub could not be asked for a {noun} of that name "
                f"({type(exc).__name__})",
                where,
            ) from None
        if not found:
            raise RecipeError(f"no {noun} folder {name!r}{looked}, and no {noun} {name!r} on the hub", where)
    return name
