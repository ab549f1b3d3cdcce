"""The recipe's schema: one strict base model, and the core's own sections.

Every section of every owner (the core here, the pipeline's ``stages:``, the evaluation's
``eval:``) is a :class:`Strict` model: an unknown key is an error, and every number must be
finite. The sections other owners add (a trainer kind's configuration section, a plugin's
recipe section) join the core's in :func:`recipe_model`.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError


class Strict(BaseModel):
    """The base of every recipe section: unknown keys refused, every number finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSection(Strict):
    name_or_path: str = Field(description="local folder, hub id, or tiny:causal-lm")
    tokenizer: str | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    ref_model: str | None = None
    peft: Any = Field(None, exclude=True)

    @field_validator("peft")
    @classmethod
    def _peft_moved(cls, value):
        if value is not None:
            raise PydanticCustomError("moved", "LoRA settings go in a top-level peft section, not under model")
        return value


class PeftSection(Strict):
    """LoRA adapters on the policy (fields of ``peft.LoraConfig``). The policy then trains only
    the adapters; the reference is the same model with its adapters switched off."""

    r: int = Field(8, gt=0)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    # None: PEFT's default modules for the architecture; a list of module names, a regex
    # matched against full module names, or "all-linear".
    target_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = False
    use_dora: bool = False
    task_type: Literal["CAUSAL_LM"] = "CAUSAL_LM"

    @field_validator("target_modules", "modules_to_save")
    @classmethod
    def _names(cls, value):
        if isinstance(value, list) and (not value or not all(isinstance(v, str) and v for v in value)):
            raise PydanticCustomError("module_names", "expected a non-empty list of module names")
        if isinstance(value, str) and not value:
            raise PydanticCustomError("module_names", "expected module names, a regex of module names or 'all-linear'")
        return value

    @model_validator(mode="after")
    def _lora_accepts(self):
        from ..loading import lora_config

        try:
            lora_config(self)  # LoraConfig's own checks, at start-up
        except (TypeError, ValueError) as exc:
            raise PydanticCustomError("lora", "peft.LoraConfig rejected the section: {reason}", {"reason": str(exc)}) from None
        return self


class DataSplit(Strict):
    path: str
    name: str | None = None
    split: str = "train"
    data_files: str | list[str] | dict[str, Any] | None = None
    max_rows: int | None = Field(default=None, gt=0)
    columns: dict[str, str] | None = None  # rename: {old: new}


class DataSection(Strict):
    train: DataSplit
    eval: DataSplit | None = None
    on_error: Literal["raise", "drop"] = "raise"  # bad rows and malformed lines: stop at the first, or drop and count
    drop_empty: bool = False  # drop rows whose text columns are empty (always counted in the filter report)


class ComponentSpec(BaseModel):
    # The core's own keys, strictly: "false" is no bool (the component's keys are checked
    # against its factory's annotations: trl_plus.registry.ComponentInfo.check_values).
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)
    name: str


class RewardSpec(ComponentSpec):
    weight: float = 1.0
    normalize: bool = False
    alias: str | None = None


class RecipeModel(Strict):
    """The core's sections. ``model`` and ``data`` are optional only for a recipe that a
    standalone section runs (a pipeline's ``stages:``, which builds its own models and data
    per stage); a trainer recipe needs them, and ``trainer``."""

    trainer: str | None = None
    model: ModelSection | None = None
    data: DataSection | None = None
    rewards: list[RewardSpec] = []
    kl: ComponentSpec | None = None
    peft: PeftSection | None = None
    filters: list[ComponentSpec] = []
    rollout_filters: list[ComponentSpec] = []


CORE_SECTIONS = tuple(RecipeModel.model_fields)


@functools.lru_cache(maxsize=32)
def recipe_model(trainer_kinds: tuple[str, ...], sections: tuple[str, ...]) -> type[RecipeModel]:
    """The whole recipe's model: the core's sections, ``trainer:`` one of ``trainer_kinds``
    (with a configuration section named after each, a mapping of its config's fields,
    checked against the config class by ``trainer_config``), and one free value per plugin
    section in ``sections`` (each checked by its own ``RecipeSection.check``)."""
    fields: dict[str, Any] = {}
    if trainer_kinds:
        fields["trainer"] = (Literal[trainer_kinds] | None, None)  # "Input should be 'dpo' or 'ppo'"
    for name in trainer_kinds:
        if name not in CORE_SECTIONS:
            fields[name] = (dict[str, Any], {})
    for key in sections:
        if key not in CORE_SECTIONS and key not in trainer_kinds:
            fields[key] = (Any, None)
    return create_model("Recipe", __base__=RecipeModel, **fields)
