"""``trl_plus.RLOOTrainer``: TRL's RLOO (REINFORCE with a leave-one-out baseline over each
prompt's group of completions; Ahmadian et al. 2024) with trl-plus's reward sources, KL
schedule, data and rollout filters and lifecycle hooks (``group_rl``, shared with GRPO)."""

from __future__ import annotations

from dataclasses import dataclass

import trl

from .group_rl import GroupRLMixin, UnscoredGuardConfig

__all__ = ["RLOOTrainer", "RLOOConfig"]


@dataclass
class RLOOConfig(UnscoredGuardConfig, trl.RLOOConfig):
    """``trl.RLOOConfig`` plus ``max_unscored_batches``, so that a recipe's ``rloo:`` section can set it.

    ``beta`` is the KL coefficient of the reward penalty (TRL's meaning); a KL schedule
    (``kl=``) replaces it before every optimizer step and needs ``beta > 0`` (a reference).
    """


class RLOOTrainer(GroupRLMixin, trl.RLOOTrainer):
    """Drop-in for ``trl.RLOOTrainer``: every argument it takes works the same, plus keyword-only
    ``rewards``, ``kl``, ``filters``, ``rollout_filters``, ``plugin_manager``, ``recipe`` and
    ``load_reports`` (see :class:`trl_plus.trainers.group_rl.GroupRLMixin`)."""

    _tag_names = ["trl", "trl-plus", "rloo"]
    _trl_parent = trl.RLOOTrainer
    config_class = RLOOConfig
    recipe_section = "rloo"
