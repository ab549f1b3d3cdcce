"""The adaptive KL controller of Ziegler et al. (2019), driven by the measured KL."""

from __future__ import annotations

import math
from collections.abc import Mapping

import trl_plus
from trl_plus.errors import RecipeError


class AdaptiveKLController:
    """Proportional control of the KL coefficient toward a target KL.

    At each call with a measured ``stats["kl"]``::

        error = clip(kl / target - 1, -0.2, 0.2)
        value = value * (1 + error * n / horizon)

    where ``n`` is the number of samples (episodes) trained on since the previous call, read
    from the cumulative ``stats["samples"]`` that PPO passes, so ``horizon`` is in samples as
    in the original method. A trainer that passes no ``samples`` (DPO) gets ``n`` in steps.
    Without a measured KL (the first call) the value is left unchanged.
    """

    def __init__(self, init: float = 0.05, target: float = 6.0, horizon: int = 10000):
        for key, value in (("init", init), ("target", target), ("horizon", horizon)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise RecipeError(f"must be a number > 0, got {value!r}", key)
        self.value, self.target, self.horizon = float(init), float(target), float(horizon)
        self._last_count: float | None = None  # samples (or steps) at the previous call

    def __call__(self, step, stats):
        stats = stats or {}
        count = stats.get("samples", step)
        kl = stats.get("kl")
        if kl is not None and math.isfinite(kl) and self._last_count is not None and count > self._last_count:
            n = count - self._last_count
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n / self.horizon
        if self._last_count is None or count > self._last_count:
            self._last_count = count
        return self.value

    def state(self) -> dict:
        """What a checkpoint keeps (:class:`trl_plus.protocols.KLSchedule`): the value, the
        count it last adapted at, and the target and horizon it adapted with. The keys are
        the controller's attributes, as checkpoints written before ``state()`` existed hold
        them, so that either is read by :meth:`load_state`."""
        return {"value": self.value, "target": self.target, "horizon": self.horizon, "_last_count": self._last_count}

    def load_state(self, state: Mapping) -> None:
        """Continue from what :meth:`state` returned; a key the state lacks is left as it is."""
        for key in ("value", "target", "horizon"):
            if key in state:
                setattr(self, key, float(state[key]))
        if "_last_count" in state:
            self._last_count = state["_last_count"]


@trl_plus.hookimpl
def trl_plus_register_kl_schedules(register):
    register.add("adaptive", AdaptiveKLController)
