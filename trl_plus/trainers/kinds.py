"""The table of trainer kinds: the one place that lists them.

A built-in plugin: it registers each kind through ``trl_plus_register_trainer_kinds``,
exactly as a third party adds its own. The recipe schema, the CLI, the pipeline and the
report read the kinds from ``Hooks.trainer_kinds``, never from a list of their own;
``trl_plus.trainers.from_recipe.train_from_recipe`` trains any of them.

Each kind's pieces live with its trainer and are imported on first use (registering the
kinds imports no torch). A third party's kind can reuse one of these:
``dataclasses.replace(DPO, name="my-dpo", load=lambda: (MyDPOTrainer, DPOConfig))``.
"""

from __future__ import annotations

import trl_plus

from ..protocols import TrainerKind


def _dpo() -> tuple[type, type]:
    from .dpo import DPOConfig, DPOTrainer

    return DPOTrainer, DPOConfig


def _build_dpo(trainer_class, model, **kwargs):
    from .dpo import build_trainer

    return build_trainer(trainer_class, model, **kwargs)


def _ppo() -> tuple[type, type]:
    from .ppo import PPOTrainer
    from .ppo_config import PPOConfig

    return PPOTrainer, PPOConfig


def _check_ppo(recipe) -> None:
    from .ppo import check_recipe

    check_recipe(recipe)


def _build_ppo(trainer_class, model, **kwargs):
    from .ppo import build_trainer

    return build_trainer(trainer_class, model, **kwargs)


def _rloo() -> tuple[type, type]:
    from .rloo import RLOOConfig, RLOOTrainer

    return RLOOTrainer, RLOOConfig


def _grpo() -> tuple[type, type]:
    from .grpo import GRPOConfig, GRPOTrainer

    return GRPOTrainer, GRPOConfig


def _check_group(recipe) -> None:
    from .group_rl import check_recipe

    check_recipe(recipe, {"rloo": _rloo, "grpo": _grpo}.get(recipe.trainer, _rloo)()[1])


def _build_group(trainer_class, model, **kwargs):
    from .group_rl import build_trainer

    return build_trainer(trainer_class, model, **kwargs)


def _online_dpo() -> tuple[type, type]:
    from .online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    return OnlineDPOTrainer, OnlineDPOConfig


def _check_online_dpo(recipe) -> None:
    from .online_dpo import check_recipe

    check_recipe(recipe)


def _build_online_dpo(trainer_class, model, **kwargs):
    from .online_dpo import build_trainer

    return build_trainer(trainer_class, model, **kwargs)


DPO = TrainerKind("dpo", "pairs", _dpo, "direct preference optimisation on (prompt, chosen, rejected) pairs",
                  build=_build_dpo, kl_field="beta")
PPO = TrainerKind("ppo", "prompts", _ppo, "PPO with a critic, on prompts scored by the recipe's reward sources",
                  build=_build_ppo, check=_check_ppo, kl_field="beta")
RLOO = TrainerKind("rloo", "prompts", _rloo, "RLOO: REINFORCE with a leave-one-out baseline over each prompt's "
                   "completions, no critic, on the recipe's reward sources", build=_build_group, check=_check_group,
                   kl_field="beta")
GRPO = TrainerKind("grpo", "prompts", _grpo, "GRPO: advantages normalised within each prompt's completions, no "
                   "critic, on the recipe's reward sources", build=_build_group, check=_check_group,
                   kl_field="beta")
ONLINE_DPO = TrainerKind("online_dpo", "prompts", _online_dpo, "online (iterative) DPO: each round, pairs of the "
                         "current policy's completions labelled by the recipe's reward sources, the reference fixed",
                         build=_build_online_dpo, check=_check_online_dpo, kl_field="beta")
KINDS = (DPO, PPO, RLOO, GRPO, ONLINE_DPO)


@trl_plus.hookimpl(trylast=True)
def trl_plus_register_trainer_kinds(register) -> None:
    for kind in KINDS:
        register.add(kind.name, kind)
