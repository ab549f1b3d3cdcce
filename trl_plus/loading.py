"""Loading what a recipe names: tokenizer, models (through the decision hooks), data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import DataError, RecipeError
from .tiny import resolve


def model_init_kwargs(section) -> dict:
    kwargs: dict[str, Any] = {"trust_remote_code": section.trust_remote_code}
    if section.revision:
        kwargs["revision"] = section.revision
    if section.dtype != "auto":
        import torch

        kwargs["dtype"] = getattr(torch, section.dtype)
    return kwargs


# What a saved tokenizer leaves in its folder (any one of them).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")


def load_tokenizer(section):
    from transformers import AutoTokenizer

    name = resolve(section.tokenizer or section.name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name, revision=section.revision, trust_remote_code=section.trust_remote_code
        )
    except (OSError, ValueError, TypeError) as exc:
        key = "model.tokenizer" if section.tokenizer else "model.name_or_path"
        folder = Path(name)
        if folder.is_dir() and not any((folder / f).exists() for f in TOKENIZER_FILES):
            hint = "" if section.tokenizer else "; save the tokenizer there too, or name one with model.tokenizer"
            raise RecipeError(
                f"the folder {name!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}){hint}", key
            ) from None
        raise RecipeError(f"cannot load tokenizer {name!r}: {type(exc).__name__}: {str(exc).splitlines()[0]}", key) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(section, hooks, role: str = "policy", name: str | None = None):
    name = name or section.name_or_path
    try:
        return hooks.load_model(name, role, model_init_kwargs(section))
    except OSError as exc:
        raise RecipeError(f"cannot load model {name!r} for role {role!r}: {exc}", "model.name_or_path") from None


def lora_config(section):
    """The ``peft.LoraConfig`` of a ``peft:`` section (a ``PeftSection`` or a mapping); raises
    LoraConfig's own ``ValueError``/``TypeError``."""
    from peft import LoraConfig

    values = section.model_dump() if hasattr(section, "model_dump") else dict(section)
    values.setdefault("task_type", "CAUSAL_LM")
    return LoraConfig(**values)


def peft_config(section, where: str = "peft"):
    """The ``peft.LoraConfig`` of a recipe's ``peft:`` section, or None without one."""
    if not section:
        return None
    try:
        return lora_config(section)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"peft.LoraConfig rejected the section: {exc}", where) from None


def load_split(split, hooks, where: str, on_error: str = "raise"):
    """One data split, loaded through the dataset hook, columns renamed, rows capped.

    A local file that is empty, or a JSON Lines file with a malformed line, is a
    :class:`DataError` naming the file (and the line and its parse error); with
    ``on_error="drop"`` the malformed lines are dropped instead, and counted in the
    filter report of the trainer that prepares the split.
    """
    if split is None:
        return None
    from . import data_checks

    spec = split.model_dump()
    path = Path(spec["path"])
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{where}.path: the file {str(path)!r} is empty (no rows)")
    loaded = None
    try:
        dataset = hooks.load_dataset(spec)
    except DataError:
        if not data_checks.is_json_lines(path):
            raise
        problem = data_checks.read_jsonl_problem(path)
        if problem is None:
            raise
        line, what = problem
        if line == 0:
            raise DataError(f"{where}.path: the file {str(path)!r} is empty (no rows)") from None
        if on_error != "drop":
            raise DataError(
                f"{where}.path: {path}, line {line}: {what}; fix the line, or set data.on_error: drop "
                "to drop malformed lines"
            ) from None
        dataset, loaded = data_checks.load_jsonl_dropping(path, lambda good: hooks.load_dataset({**spec, "path": good}))
    if split.columns:
        missing = [c for c in split.columns if c not in dataset.column_names]
        if missing:
            raise DataError(
                f"{where}.columns: the dataset has no column {', '.join(repr(m) for m in missing)} to rename "
                f"(columns: {', '.join(dataset.column_names)})"
            )
        dataset = dataset.rename_columns(split.columns)
    if split.max_rows is not None and split.max_rows < len(dataset):
        dataset = dataset.select(range(split.max_rows))
    if loaded is not None:
        data_checks.remember_load_report(dataset, loaded)
    return dataset


def require_columns(dataset, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DataError(
            f"{where}: the dataset has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(dataset.column_names)}); rename with {where}.columns"
        )


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
    from trl_plus.plugins.loading import FILE_FORMATS

    return Path(name).suffix in FILE_FORMATS


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


def resolve_model_ref(
    name: str,
    where: str,
    base_dir: str | Path | None = None,
    repo_type: str = "model",
    probe_hub: bool = False,
    lookup: bool = True,
) -> str:
    """``name`` as a loader should get it: an absolute folder (or file) that exists, a
    ``tiny:`` name, or a hub id; raises :class:`RecipeError` naming ``where`` otherwise.

    A missing local path names the folder it was looked up in. A hub id must be valid;
    with the hub offline it must be in the local cache. ``probe_hub`` asks the hub about an
    uncached id (so a mistyped relative path is not reported as a hub connection error).
    ``lookup=False``: a relative name is not looked for on disk (a loaded recipe's paths
    are absolute already: what is still relative was found to be no local path).
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
