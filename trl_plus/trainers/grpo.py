"""``trl_plus.GRPOTrainer``: TRL's GRPO (advantages normalised within each prompt's group of
completions, the KL to the reference in the loss; Shao et al. 2024) with trl-plus's reward
sources, KL schedule, data and rollout filters and lifecycle hooks (``group_rl``, shared with
RLOO)."""

from __future__ import annotations

from dataclasses import dataclass

import trl

from .group_rl import GroupRLMixin, UnscoredGuardConfig

__all__ = ["GRPOTrainer", "GRPOConfig"]


@dataclass
class GRPOConfig(UnscoredGuardConfig, trl.GRPOConfig):
    """``trl.GRPOConfig`` plus ``max_unscored_batches``, so that a recipe's ``grpo:`` section can set it.

    ``beta`` is the weight of the per-token KL term in the loss (TRL's meaning; TRL's default
    0 loads no reference model); a KL schedule (``kl=``) replaces it before every optimizer
    step and needs ``beta > 0``.
    """


class GRPOTrainer(GroupRLMixin, trl.GRPOTrainer):
    """Drop-in for ``trl.GRPOTrainer``: every argument it takes works the same (tools,
    ``rollout_func`` and ``environment_factory`` included), plus keyword-only ``rewards``, ``kl``,
    ``filters``, ``rollout_filters``, ``plugin_manager``, ``recipe`` and ``load_reports`` (see
    :class:`trl_plus.trainers.group_rl.GroupRLMixin`)."""

    _tag_names = ["trl", "trl-plus", "grpo"]
    _trl_parent = trl.GRPOTrainer
    config_class = GRPOConfig
    recipe_section = "grpo"
