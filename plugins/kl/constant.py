"""KL schedule: one value for the whole run."""

from __future__ import annotations

import trl_plus
from trl_plus.errors import RecipeError


class Constant:
    """The same KL strength at every step."""

    def __init__(self, value: float):
        if not value > 0:
            raise RecipeError(f"value must be > 0, got {value!r}")
        self.value = float(value)

    def __call__(self, step, stats):
        return self.value


@trl_plus.hookimpl
def trl_plus_register_kl_schedules(register):
    register.add("constant", Constant)
