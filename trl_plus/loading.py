"""Loading what a recipe names: the tokenizer (with a pad token), models (through the
``trl_plus_load_model`` decision hook), LoRA settings. Which names are local paths or hub
ids is ``trl_plus.model_refs``'s; data splits are ``trl_plus.data``'s. ``hooks`` is
always the caller's: nothing here builds a plugin manager."""

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
    return pad_with_eos(tokenizer)


def pad_with_eos(tokenizer, required: bool = False):
    """``tokenizer``, padding with its eos token where it has no pad token (most causal
    LMs have none); every tokenizer trl-plus loads goes through here.

    :param required: a tokenizer with neither is a :class:`DataError` (batches that are
        padded, as in evaluation, cannot be built); else it is left without a pad token.
    """
    if tokenizer.pad_token is None:
        if required and tokenizer.eos_token is None:
            raise DataError("the tokenizer has neither a pad nor an eos token")
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
