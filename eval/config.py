"""The ``eval:`` section of a recipe (and what the CLI flags fill in), validated before any
model is loaded. Errors name the key as ``eval.<key>``, every one of them at once (the
recipe's translator of pydantic's errors: did-you-mean and the allowed keys)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from trl_plus.errors import RecipeError, RecipeProblems
from trl_plus.recipe import Strict as _Strict
from trl_plus.recipe import pydantic_problems


class GenerationSection(_Strict):
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    num_samples: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    seed: int = 0


class KLSection(_Strict):
    enabled: bool = True
    num_samples: int = Field(4, ge=1)
    estimator: Literal["token", "sample"] = "token"  # eval.kl: per-position exact KL, or each sample's log-ratio
    max_new_tokens: int | None = Field(None, ge=1)  # default: generation.max_new_tokens
    reference: str | None = None  # default: the eval reference checkpoint


class LmEvalSection(_Strict):
    batch_size: int = Field(16, ge=1)
    limit: int | float | None = None
    num_fewshot: int | None = Field(None, ge=0)


class BootstrapSection(_Strict):
    resamples: int = Field(2000, ge=1000)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0


class EvalSection(_Strict):
    """Every key of ``eval:``; all optional."""

    prompts: str | dict[str, Any] | None = None  # .jsonl path or dataset spec; default: the recipe's data
    prompt_column: str = "prompt"
    reference_column: str | None = None  # reference completions in the prompt set
    max_prompts: int | None = Field(None, ge=1)
    drop_empty: bool = False  # drop empty or whitespace-only prompts (counted in eval.json) instead of refusing them
    reference: str | None = None  # reference checkpoint (default: the recipe's model)
    judges: list[str | dict[str, Any]] = []
    gold: str | dict[str, Any] | None = None  # a reward source spec
    tasks: list[str] = []  # lm-eval task names; "trl_plus_offline" = the shipped pack
    generation: GenerationSection = GenerationSection()
    kl: KLSection = KLSection()
    lm_eval: LmEvalSection = LmEvalSection()
    bootstrap: BootstrapSection = BootstrapSection()
    judge_batch_size: int = Field(64, ge=1)
    cache: str | None = None  # generations cache file (default: OUT/generations.jsonl)


def validate_eval_section(section: Any, hooks=None) -> EvalSection:
    """Validate an ``eval:`` mapping: keys, types and every judge / gold spec against the
    registries (without building anything). Raises :class:`RecipeError` naming ``eval.<key>``
    (:class:`RecipeProblems` for several)."""
    from trl_plus.components import split_spec
    from trl_plus.manager import Hooks

    from .judging import normalise_judge_spec

    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise RecipeError(f"expected a mapping, got {section!r}", "eval")
    try:
        parsed = EvalSection.model_validate(section)
    except ValidationError as exc:
        raise RecipeProblems(pydantic_problems(exc, EvalSection, ("eval",))) from None
    hooks = Hooks.of(hooks)
    for i, spec in enumerate(parsed.judges):
        normalise_judge_spec(spec, hooks, f"eval.judges[{i}]")
    if parsed.gold is not None:
        name, kwargs, _ = split_spec(parsed.gold, "eval.gold")
        hooks.reward_sources.check_kwargs(name, kwargs, "eval.gold")
    return parsed
