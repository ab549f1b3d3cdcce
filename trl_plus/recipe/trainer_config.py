"""The trainer's configuration section (``dpo:``, ``ppo:``: named after the recipe's
``trainer:``), checked field by field against the kind's config class and built.

The config class comes from the table of trainer kinds
(``Hooks.trainer_kinds[name].config_class``, registered through
``trl_plus_register_trainer_kinds``): a third party's kind is checked the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re

from ..errors import RecipeError
from .problems import Problems, format_loc
from .trainer_values import trainer_value_problems, type_hints

# "vf_coef must be >= 0, got -1": a config's own message that starts with its field
_FIELD_MESSAGE = re.compile(r"^`?(?P<field>[a-z_][a-z0-9_]*)`? (must|should|is|has|cannot|can't)\b")
# ``critic_init`` values that name no model: the policy's backbone, the recipe's reward model.
CRITIC_INIT_WORDS = ("policy", "reward")


def trainer_config_class(trainer: str, hooks=None) -> type:
    """The config class of trainer kind ``trainer`` (imports the trainer's module)."""
    from ..manager import Hooks

    return Hooks.of(hooks).trainer_kinds[trainer].config_class


def check_trainer_section(spec, hooks, problems: Problems) -> None:
    """The section of ``spec.trainer``: every field known to its config class, of its type
    and in range; then the config built as a dry run. A section of another kind is refused."""
    section = spec.trainer
    values = getattr(spec, section)
    for other in hooks.trainer_kinds:
        if other != section and getattr(spec, other, None):
            problems.add(other, f"section {other!r} is for trainer {other!r}, but trainer is {section!r}")
    cls = trainer_config_class(section, hooks)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = type_hints(cls)
    bad = False
    for key, value in values.items():
        where = f"{section}.{key}"
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            problems.add(where, f"unknown {cls.__name__} field {key!r}." + (f" Did you mean: {hint[0]}?" if hint else ""))
        elif key == "output_dir":
            problems.add(where, "set the output folder with --output-dir, not in the recipe")
        elif found := trainer_value_problems(hints, key, value, section):
            for loc, message in found:
                problems.add(format_loc((section, key) + loc), message)
        else:
            continue
        bad = True
    if bad:
        return  # the config would only repeat what is said above, less clearly
    try:
        build_trainer_config(spec, "/tmp/trl-plus-validate", device_defaults=False, hooks=hooks)
    except RecipeError as exc:
        problems.add_error(section, exc)
    except Exception as exc:
        m = _FIELD_MESSAGE.match(str(exc))
        key = f"{section}.{m['field']}" if m and m["field"] in fields else section
        problems.add(key, f"{cls.__name__} rejected the section: {exc}")


def check_critic_init(spec, problems: Problems) -> None:
    """A trainer section's ``critic_init`` (PPO's): a model folder that exists or a valid
    hub id, or ``reward`` with a reward model among the recipe's rewards."""
    section = spec.trainer
    critic = (getattr(spec, section, None) or {}).get("critic_init") if section else None
    where = f"{section}.critic_init"
    if not isinstance(critic, str) or not critic or problems.under(where):
        return  # none, or said above (not a field of this kind's config, not a string)
    if critic not in CRITIC_INIT_WORDS:
        from ..model_refs import resolve_model_ref

        with problems.check(where):  # a folder must exist, a hub id be valid (and cached offline)
            resolve_model_ref(critic, where, lookup=False)
    elif critic == "reward" and not any(r.name == "reward_model" and isinstance(getattr(r, "model", None), str)
                                        for r in spec.rewards):
        problems.add(where, "critic_init 'reward' starts the critic from the recipe's reward model, and "
                            "rewards lists no 'reward_model' source with a model: add one, or use "
                            "critic_init: policy or a model path")


def build_trainer_config(spec, output_dir: str, device_defaults: bool = True, hooks=None, **overrides):
    """The trainer's config from the recipe section, with CPU-friendly defaults where unset."""
    cls = trainer_config_class(spec.trainer, hooks)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {**getattr(spec, spec.trainer), **overrides}
    for key, value in list(values.items()):
        if key not in fields:
            raise RecipeError(f"unknown {cls.__name__} field {key!r}", f"{spec.trainer}.{key}")
    defaults = {"report_to": "none"}
    # TRL's defaults (bf16, gradient checkpointing) make CPU training slower, not leaner.
    cpu = not device_defaults or not _cuda()
    if cpu:
        defaults["bf16"] = False
        if "gradient_checkpointing" not in values:
            defaults["activation_checkpointing"] = False
    # Without use_cpu, accelerate treats torchrun's CPU processes as independent single runs.
    if device_defaults and cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        defaults["use_cpu"] = True
    # (a config of another kind may lack these fields: only the ones it has)
    values = {**{k: v for k, v in defaults.items() if k in fields}, **values}
    return cls(output_dir=output_dir, **values)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
