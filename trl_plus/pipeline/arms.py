"""The arms of a comparison: the policy stages of ``stages:``, each a trainer kind trained
over a sweep of KL strengths, once per seed.

The pipeline's own arms have their sections in ``config``: ``ppo`` (PPO on the learned
reward model), ``ppo_gt`` (PPO on the gold reward) and ``dpo`` (DPO on the pairs). Every
other trainer kind registered through ``trl_plus_register_trainer_kinds`` (``rloo``,
``grpo``, a third party's) is an arm under its own name, a key of ``stages:`` like the
built-in ones::

    stages:
      dpo:  {betas: [0.1]}
      rloo: {betas: [0.05, 0.2], args: {max_steps: 60}}   # any RLOOConfig field in args

What an arm trains on follows from what its kind consumes (``TrainerKind.consumes``): a
kind that consumes pairs trains on the pipeline's preference pairs, as DPO does; one that
consumes prompts trains on the prompts, scored by the learned reward model, as ``ppo``
does. Its sweep is named for its KL knob (``TrainerKind.kl_field``): ``<kl_field>s``, each
value one run per seed, in ``<name>/<kl_field><value>-seed<n>``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, ValidationError, create_model

from ..recipe import PeftSection, Problems
from ..recipe import Strict as _Strict
from .layout import LOCK, RUN_ENTRIES

# Names no arm can have: what the pipeline writes at the top of its run folder (an arm's
# runs are written to the folder of its name).
RESERVED = frozenset((*RUN_ENTRIES, LOCK, "plots"))


class PolicyStage(_Strict):
    args: dict[str, Any] = {}
    peft: PeftSection | None = None  # LoRA adapters: the run's recipe gets it as its ``peft:`` section


class ArmStage(PolicyStage):
    """An arm of a registered trainer kind: its sweep (``<kl_field>s``), ``args`` (fields of
    the kind's config class) and ``peft``. One subclass per KL knob (:func:`arm_model`)."""

    kl_field: ClassVar[str] = ""

    @property
    def sweep_values(self) -> list[float]:
        return getattr(self, f"{self.kl_field}s")


def _positive(value: list[float]) -> list[float]:
    if not value or any(v <= 0 for v in value):
        raise ValueError(f"a non-empty list of numbers > 0, got {value}")
    return value


@lru_cache(maxsize=None)
def arm_model(kl_field: str) -> type[ArmStage]:
    """The section model of an arm whose kind's KL knob is ``kl_field``: its sweep,
    ``<kl_field>s``, is required (the strengths worth comparing differ by kind)."""
    sweep = Annotated[list[float], AfterValidator(_positive)]
    model = create_model(f"ArmStage_{kl_field}", __base__=ArmStage, **{f"{kl_field}s": (sweep, ...)})
    model.kl_field = kl_field
    return model


def stage_of(config, method: str):
    """The section of a policy stage: an arm's (``config.arms``) or the pipeline's own
    (``config.stages.<method>``)."""
    arms = getattr(config, "arms", None) or {}
    return arms[method] if method in arms else getattr(config.stages, method)


def arm_names(raw: Mapping, stage_keys, kinds: Mapping) -> list[str]:
    """The keys of ``stages:`` that name a registered trainer kind as an arm."""
    return [name for name, section in raw.items()
            if name not in stage_keys and name in kinds and name not in RESERVED and section is not None]


def parse_arms(raw: Mapping, stage_keys: list[str], kinds: Mapping, problems: Problems,
               has_reward: bool) -> dict[str, ArmStage]:
    """The arms among the keys of ``stages:`` other than the pipeline's own (``stage_keys``),
    in the recipe's order; each problem is added under its key (an unknown name with the
    registered kinds, did-you-mean first)."""
    arms: dict[str, ArmStage] = {}
    for name, section in raw.items():
        if name in stage_keys or section is None:
            continue
        where = f"stages.{name}"
        kind = kinds.get(name)
        if kind is None:
            problems.add(where, _unknown(str(name), stage_keys, kinds))
        elif name in RESERVED:
            problems.add(where, f"the trainer kind {name!r} cannot be an arm: its runs would be written to the run "
                                f"folder's {name}, which the pipeline writes itself")
        elif not kind.kl_field:
            problems.add(where, f"the trainer kind {name!r} names no KL knob (TrainerKind.kl_field), and an arm is a "
                                "sweep of KL strengths: register the kind with kl_field, the config field that holds "
                                "its KL strength (beta in TRL's trainers)")
        else:
            model = arm_model(kind.kl_field)
            try:
                arm = model.model_validate(section)
            except ValidationError as exc:
                problems.add_validation(exc, model, ("stages", name), dotted_indices=True)
                continue
            _check_knob(name, kind, problems)
            if kind.consumes == "prompts" and not has_reward:
                problems.add(where, f"{name} trains on prompts scored by the learned reward model, as ppo does: add "
                                    "a 'reward' stage")
            arms[name] = arm
    return arms


def _unknown(name: str, stage_keys: list[str], kinds: Mapping) -> str:
    registered = sorted(kinds)
    hint = difflib.get_close_matches(name, [*stage_keys, *registered], n=1)
    return (f"unknown key {name!r}: neither a stage of the pipeline nor a registered trainer kind."
            + (f" Did you mean: {hint[0]}?" if hint else "")
            + f" Stages: {', '.join(stage_keys)}; registered trainer kinds (each can be an arm): "
            + ", ".join(registered))


def _check_knob(name: str, kind, problems: Problems) -> None:
    """The kind's KL knob is a field of its config class (when the trainer is installed)."""
    try:
        cls = kind.config_class
        fields = {f.name for f in dataclasses.fields(cls)}
    except (ImportError, TypeError):
        return  # not installed (the policy stage says so when it runs), or not a dataclass
    if kind.kl_field not in fields:
        problems.add(f"stages.{name}", f"the trainer kind {name!r} sweeps {kind.kl_field!r} (its kl_field), which is "
                                       f"no field of {cls.__name__}")
