"""Judge: a sequence-classification reward model, P(A beats B) = sigmoid(r_A - r_B)
(Bradley-Terry). Scoring is the ``reward_model`` reward source's, built by spec."""

from __future__ import annotations

import trl_plus
from trl_plus.plugins.judges.reward_source import RewardSourceJudge


def reward_model_judge(model: str, batch_size: int = 16, max_length: int = 512, append_eos: bool = False,
                       temperature: float = 1.0, components=None):
    """A reward model (path, hub id or tiny:reward-model) as a pairwise judge."""
    spec = {"name": "reward_model", "model": model, "batch_size": batch_size, "max_length": max_length,
            "append_eos": append_eos}
    return RewardSourceJudge(spec, temperature=temperature, components=components)


@trl_plus.hookimpl
def trl_plus_register_judges(register):
    register.add("reward_model", reward_model_judge)
