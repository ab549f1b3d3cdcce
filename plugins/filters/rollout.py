"""Rollout filters for PPO: they read the scored rollout's ``reward`` column."""

from __future__ import annotations

import math
import statistics

import trl_plus


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


class RewardRange:
    """Drop samples with no score (None or NaN) or a score outside [min, max]."""

    def __init__(self, min: float | None = None, max: float | None = None, column: str = "reward"):
        self.low, self.high, self.column = min, max, column

    def __call__(self, batch):
        return [
            _finite(r) and (self.low is None or r >= self.low) and (self.high is None or r <= self.high)
            for r in batch[self.column]
        ]


class RewardVariance:
    """Drop the whole batch when its scores do not vary (std below ``min_std``): no signal."""

    def __init__(self, min_std: float = 1e-6, column: str = "reward"):
        self.min_std, self.column = min_std, column

    def __call__(self, batch):
        values = [r for r in batch[self.column] if _finite(r)]
        varied = len(values) > 1 and statistics.pstdev(values) >= self.min_std
        return [varied] * len(batch[self.column])


@trl_plus.hookimpl
def trl_plus_register_data_filters(register):
    register.add("reward_range", RewardRange)
    register.add("reward_variance", RewardVariance)
