"""The table of trainer kinds: the one place that lists them.

A built-in plugin: it registers each kind through ``trl_plus_register_trainer_kinds``,
exactly as a third party adds its own. The recipe schema, the CLI, the pipeline and the
report read the kinds from ``Hooks.trainer_kinds``, never from a list of their own.
"""

from __future__ import annotations

import trl_plus

from ..protocols import TrainerKind


def _dpo() -> tuple[type, type]:
    from .dpo import DPOConfig, DPOTrainer

    return DPOTrainer, DPOConfig


def _ppo() -> tuple[type, type]:
    from .ppo import PPOTrainer
    from .ppo_config import PPOConfig

    return PPOTrainer, PPOConfig


KINDS = (
    TrainerKind("dpo", "pairs", _dpo, "direct preference optimisation on (prompt, chosen, rejected) pairs"),
    TrainerKind("ppo", "prompts", _ppo, "PPO with a critic, on prompts scored by the recipe's reward sources"),
)


@trl_plus.hookimpl(trylast=True)
def trl_plus_register_trainer_kinds(register) -> None:
    for kind in KINDS:
        register.add(kind.name, kind)
