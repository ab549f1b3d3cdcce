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

    A local file that is empty, or a JSON Lines file with a malformed line (not JSON, not
    an object, not UTF-8), is a :class:`DataError` naming the file (and the line and its
    problem); with ``on_error="drop"`` the malformed lines are dropped instead, and counted
    in the filter report of the trainer that prepares the split. Every other error of the
    loader is a :class:`DataError` under ``where.path``.
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
    except DataError as exc:
        problem = data_checks.read_jsonl_problem(path) if data_checks.is_json_lines(path) else None
        if problem is None:
            message = str(exc)
            if message.startswith(f"{where}."):
                raise
            raise DataError(f"{where}.path: {message}") from exc.__cause__
        line, what = problem
        if line == 0:
            raise DataError(f"{where}.path: the file {str(path)!r} is empty (no rows)") from None
        if on_error != "drop":
            raise DataError(
                f"{where}.path: {path}, line {line}: {what}; fix the line, or set data.on_error: drop "
                "to drop malformed lines"
            ) from None
        dataset, loaded = data_checks.load_jsonl_dropping(path, lambda good: hooks.load_dataset({**spec, "path": good}))
    if path.is_file() and data_checks.one_object_of_lists(path, dataset):
        raise DataError(
            f"{where}.path: {path} holds one JSON object of lists (keys: {', '.join(dataset.column_names)}), which "
            "reads as a single row; write one JSON object a row (JSON Lines, or a JSON array of objects)"
        )
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


def builtin_dataset_loader(hooks=None) -> bool:
    """Whether data files are read by the built-in loader alone (no plugin implements
    ``trl_plus_load_dataset``, which may read formats of its own)."""
    from .manager import Hooks

    impls = Hooks.of(hooks).pm.hook.trl_plus_load_dataset.get_hookimpls()
    return all(impl.function.__module__ == "trl_plus.plugins.loading" for impl in impls)


def data_file_check(path, on_error: str = "raise", hooks=None) -> str | None:
    """What the built-in loader would refuse in the local data file ``path``, found at
    start-up without loading it (``trl_plus.data_checks.data_file_problem``): an unknown
    suffix, an empty file, a CSV header naming a column twice, a line that is not UTF-8.
    None when there is nothing to say, or when a plugin loads datasets."""
    from .data_checks import data_file_problem

    if not builtin_dataset_loader(hooks):
        return None
    return data_file_problem(path, on_error)


def require_columns(dataset, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        # A header written "prompt, chosen" makes a column " chosen": say so.
        near = {m: c for m in missing for c in dataset.column_names if c != m and c.strip().lower() == m}
        hint = "".join(f"; column {c!r} has spaces or capitals around the name {m!r}" for m, c in near.items())
        raise DataError(
            f"{where}: the dataset has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(dataset.column_names)}){hint}; rename with {where}.columns"
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
    from .data_checks import file_format

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
