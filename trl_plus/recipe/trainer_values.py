"""A trainer-config value checked before the config is built: finite, of its field's type
(with how YAML may have misread it), and in range. Used for a trainer recipe's section
(``dpo.beta``) and for a pipeline stage's ``args`` (``stages.dpo.args.beta``) alike."""

from __future__ import annotations

import math
import types
import typing

from ..value_checks import accepted_kinds, shown, yaml_hint

# Value ranges of trainer-config fields, checked before the config is built: TRL and
# transformers accept these values and fail (or silently do something else) much later.
RANGES = (
    (("learning_rate", "critic_learning_rate", "num_train_epochs", "beta", "temperature", "logging_steps",
      "save_steps", "eval_steps"), lambda v: v > 0, "a number > 0"),
    (("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
      "generation_batch_size", "precompute_ref_batch_size", "num_iterations", "num_ppo_epochs", "num_mini_batches",
      "steps_per_generation", "max_length", "max_completion_length"), lambda v: v >= 1, "an integer >= 1"),
    (("max_steps",), lambda v: v == -1 or v > 0,
     "a number of optimizer steps > 0, or -1 (the default: train for num_train_epochs)"),
    (("weight_decay", "max_grad_norm", "warmup_steps"), lambda v: v >= 0, "a number >= 0"),
)
# Ranges of one trainer section that differ from the shared ones, by section. The beta of
# PPO, RLOO and GRPO (their KL coefficient) may be 0: no KL penalty and no reference model.
_BETA_ZERO = ((("beta",), lambda v: v >= 0, "a number >= 0 (0: no KL penalty, no reference model)"),)
SECTION_RANGES = {"ppo": _BETA_ZERO, "rloo": _BETA_ZERO, "grpo": _BETA_ZERO}


def trainer_value_problems(hints: dict, key: str, value, section: str) -> list[tuple[tuple, str]]:
    """(location inside the value, message) for a trainer-config value that is not finite
    (anywhere in it), not of its field's type (with how YAML may have misread it), or out
    of range; [] when it is fine. ``hints``: the config class's type hints."""
    bad = non_finite(value)
    if bad is not None:
        return [(bad[0], f"must be a finite number, got {bad[1]}")]
    annotation = hints.get(key)
    kinds, words = accepted_kinds(annotation) if annotation is not None else (set(), [])
    hint = yaml_hint(value, wants_number=bool({int, float} & kinds), wants_bool=bool in kinds,
                     wants_text=str in kinds and bool not in kinds, words=words,
                     integer=int in kinds and float not in kinds)
    expected = simple_types(annotation)
    if expected and not type_ok(value, expected):
        return [((), f"expected {' or '.join(sorted({t.__name__ for t in expected}))}, got {shown(value)}{hint}")]
    if isinstance(value, bool) and kinds and bool not in kinds:  # e.g. save_strategy: no
        return [((), f"expected {' or '.join(repr(w) for w in words) if words else 'a string'}, got {value}{hint}")]
    message = out_of_range(key, value, section)
    return [((), message)] if message is not None else []


def non_finite(value, loc: tuple = ()) -> tuple[tuple, float] | None:
    """(location, value) of the first float in ``value`` (a number, list or mapping) that is
    not finite (inf, nan), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (loc, value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for part, item in items:
        found = non_finite(item, loc + (part,))
        if found is not None:
            return found
    return None


def out_of_range(key: str, value, section: str = "dpo") -> str | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    for keys, ok, allowed in SECTION_RANGES.get(section, ()) + RANGES:
        if key in keys:  # the first range naming the key decides
            return None if ok(value) else f"must be {allowed}, got {value!r}"
    return None


def type_hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: skip type checks rather than fail
        return {}


_CHECKED = (bool, int, float, str, type(None))


def simple_types(annotation) -> tuple | None:
    """The plain types a field accepts, or None when it is not a plain scalar field."""
    if annotation is None:
        return None
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    if not all(a in _CHECKED for a in args):
        return None
    return tuple(args)


def type_ok(value, expected: tuple) -> bool:
    if isinstance(value, bool):
        return bool in expected
    if isinstance(value, int) and (int in expected or float in expected):
        return True
    return isinstance(value, tuple(t for t in expected if t is not bool))
