"""Data filter: keep pairs whose chosen beats rejected by a margin under a reward source."""

from __future__ import annotations

import trl_plus

from ._text import as_text


class MinRewardMargin:
    """Score chosen and rejected with ``source``; keep when score(chosen) - score(rejected) >= margin.

    A pair the source has no opinion on (None) is dropped.
    """

    def __init__(self, source, margin: float = 0.0, components=None):
        # Through a mix of one, so a source returning NaN or the wrong count is a named error.
        self.source = components.reward_mix([source], where="min_reward_margin.source")
        self.margin = float(margin)

    def __call__(self, batch):
        prompts = [as_text(p) for p in batch["prompt"]]
        chosen = self.source(prompts, [as_text(c) for c in batch["chosen"]])
        rejected = self.source(prompts, [as_text(r) for r in batch["rejected"]])
        return [c is not None and r is not None and c - r >= self.margin for c, r in zip(chosen, rejected)]


@trl_plus.hookimpl
def trl_plus_register_data_filters(register):
    register.add("min_reward_margin", MinRewardMargin)
