"""Judge: any registered reward source (a gold reward, a Python callable, a third
party's plugin), P(A beats B) = sigmoid((r_A - r_B) / temperature)."""

from __future__ import annotations

import math

import trl_plus
from trl_plus.components import split_spec
from trl_plus.errors import RecipeError
from trl_plus.reward_checks import numeric_scores, source_name


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    z = math.exp(x)
    return z / (1 + z)


class RewardSourceJudge:
    """Scores A and B with one reward source (one batched call) and compares the scores.

    A pair where the source has no opinion (None) on either side is a failed pair.
    """

    def __init__(self, source: dict | str, temperature: float = 1.0, components=None):
        if components is None:
            raise RecipeError("the reward_source judge needs the components context")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise RecipeError(f"temperature must be a number > 0, got {temperature!r}")
        self.spec = source
        self.source = components.reward_source(source, "eval.judges.source")
        kind = split_spec(source, "eval.judges.source")[0] if isinstance(source, (str, dict)) else None
        self.name = source_name("eval.judges.source", kind or getattr(self.source, "__name__", "reward"), self.source)
        self.temperature = float(temperature)

    def __call__(self, prompts, completions_a, completions_b):
        n = len(prompts)
        answer = self.source(list(prompts) * 2, list(completions_a) + list(completions_b))
        out = []
        scores = numeric_scores(self.name, answer, 2 * n)
        for ra, rb in zip(scores[:n], scores[n:]):
            if ra is None or rb is None or not math.isfinite(ra) or not math.isfinite(rb):
                out.append(None)  # no opinion (or NaN) on either side: a failed pair, counted
            else:
                out.append(_sigmoid((ra - rb) / self.temperature))
        return out


@trl_plus.hookimpl
def trl_plus_register_judges(register):
    register.add("reward_source", RewardSourceJudge)
