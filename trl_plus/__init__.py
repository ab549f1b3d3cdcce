"""trl-plus: PPO, DPO, online DPO, RLOO and GRPO over TRL with pluggable reward sources, KL schedules and filters.

The public face for plugin authors is what this module exports: ``hookimpl``, the error
classes, the types of what a plugin provides (``RewardSource``, ``KLSchedule``,
``DataFilter``, ``Judge``, the ``Register`` a registration hook receives, and the
``TrainerKind`` and ``RecipeSection`` descriptors; from :mod:`trl_plus.protocols`),
``get_plugin_manager`` and ``Hooks``. The trainers are imported lazily so that a plugin
importing ``trl_plus`` does not pay for torch and TRL.
"""

from __future__ import annotations

import pluggy

from .errors import (
    ComponentError,
    DataError,
    PluginError,
    RecipeError,
    RewardSourceError,
    TrlPlusError,
    UnknownComponentError,
)
from .protocols import DataFilter, Judge, KLSchedule, RecipeSection, Register, RewardSource, TrainerKind
from .version import __version__

hookimpl = pluggy.HookimplMarker("trl_plus")

__all__ = [
    "__version__",
    "hookimpl",
    "get_plugin_manager",
    "Hooks",
    "DPOTrainer",
    "DPOConfig",
    "PPOTrainer",
    "PPOConfig",
    "RLOOTrainer",
    "RLOOConfig",
    "GRPOTrainer",
    "GRPOConfig",
    "OnlineDPOTrainer",
    "OnlineDPOConfig",
    "TrlPlusError",
    "RecipeError",
    "PluginError",
    "UnknownComponentError",
    "ComponentError",
    "RewardSourceError",
    "DataError",
    "RewardSource",
    "KLSchedule",
    "DataFilter",
    "Judge",
    "Register",
    "TrainerKind",
    "RecipeSection",
]

_LAZY = {
    "get_plugin_manager": ("trl_plus.manager", "get_plugin_manager"),
    "Hooks": ("trl_plus.manager", "Hooks"),
    "DPOTrainer": ("trl_plus.trainers.dpo", "DPOTrainer"),
    "DPOConfig": ("trl_plus.trainers.dpo", "DPOConfig"),
    "PPOTrainer": ("trl_plus.trainers.ppo", "PPOTrainer"),
    "PPOConfig": ("trl_plus.trainers.ppo_config", "PPOConfig"),
    "RLOOTrainer": ("trl_plus.trainers.rloo", "RLOOTrainer"),
    "RLOOConfig": ("trl_plus.trainers.rloo", "RLOOConfig"),
    "GRPOTrainer": ("trl_plus.trainers.grpo", "GRPOTrainer"),
    "GRPOConfig": ("trl_plus.trainers.grpo", "GRPOConfig"),
    "OnlineDPOTrainer": ("trl_plus.trainers.online_dpo", "OnlineDPOTrainer"),
    "OnlineDPOConfig": ("trl_plus.trainers.online_dpo", "OnlineDPOConfig"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'trl_plus' has no attribute {name!r}")
