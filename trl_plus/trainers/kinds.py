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


DPO = TrainerKind("dpo", "pairs", _dpo, "direct preference optimisation on (prompt, chosen, rejected) pairs",
                  build=_build_dpo)
PPO = TrainerKind("ppo", "prompts", _ppo, "PPO with a critic, on prompts scored by the recipe's reward sources",
                  build=_build_ppo, check=_check_ppo)
KINDS = (DPO, PPO)


@trl_plus.hookimpl(trylast=True)
def trl_plus_register_trainer_kinds(register) -> None:
    for kind in KINDS:
        register.add(kind.name, kind)
