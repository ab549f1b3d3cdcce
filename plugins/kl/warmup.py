"""KL schedules that move between two values over a number of steps (warm-up or decay)."""

from __future__ import annotations

import math

import trl_plus
from trl_plus.errors import RecipeError


class Linear:
    """From ``start`` at step 0 to ``end`` at step ``steps`` in a straight line, then ``end``.

    ``start`` or ``end`` may be 0 (PPO: no KL penalty there; DPO refuses a beta of 0 when it comes).
    """

    def __init__(self, start: float, end: float, steps: int):
        if not (start >= 0 and end >= 0 and start + end > 0):
            raise RecipeError(f"start and end must be >= 0 and not both 0, got start={start!r}, end={end!r}")
        if not (isinstance(steps, int) and steps > 0):
            raise RecipeError(f"steps must be a positive integer, got {steps!r}")
        self.start, self.end, self.steps = float(start), float(end), steps

    def progress(self, step: int) -> float:
        return min(max(step, 0), self.steps) / self.steps

    def __call__(self, step, stats):
        return self.start + (self.end - self.start) * self.progress(step)


class Cosine(Linear):
    """From ``start`` to ``end`` along half a cosine over ``steps`` steps, then ``end``."""

    def __call__(self, step, stats):
        return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * self.progress(step)))


@trl_plus.hookimpl
def trl_plus_register_kl_schedules(register):
    register.add("linear", Linear)
    register.add("cosine", Cosine)
