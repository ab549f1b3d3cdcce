"""Loading what a recipe names: tokenizer, models (through the decision hooks), data."""

from __future__ import annotations

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


def load_tokenizer(section):
    from transformers import AutoTokenizer

    name = resolve(section.tokenizer or section.name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name, revision=section.revision, trust_remote_code=section.trust_remote_code
        )
    except OSError as exc:
        raise RecipeError(f"cannot load tokenizer {name!r}: {exc}", "model.tokenizer" if section.tokenizer else "model.name_or_path") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(section, hooks, role: str = "policy", name: str | None = None):
    name = name or section.name_or_path
    try:
        return hooks.load_model(name, role, model_init_kwargs(section))
    except OSError as exc:
        raise RecipeError(f"cannot load model {name!r} for role {role!r}: {exc}", "model.name_or_path") from None


def peft_config(section):
    if not section.peft:
        return None
    from peft import LoraConfig

    try:
        return LoraConfig(**{"task_type": "CAUSAL_LM", **section.peft})
    except TypeError as exc:
        raise RecipeError(f"not a LoraConfig: {exc}", "model.peft") from None


def load_split(split, hooks, where: str):
    if split is None:
        return None
    spec = split.model_dump()
    dataset = hooks.load_dataset(spec)
    if split.columns:
        missing = [c for c in split.columns if c not in dataset.column_names]
        if missing:
            raise DataError(f"{where}.columns: no column {missing} in {dataset.column_names}")
        dataset = dataset.rename_columns(split.columns)
    if split.max_rows is not None and split.max_rows < len(dataset):
        dataset = dataset.select(range(split.max_rows))
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
