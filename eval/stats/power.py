"""Power of the matched-KL verdict's test, and how many seeds a comparison needs.

One function computes power, :func:`welch_power`: the two-sided Welch t-test that
:func:`~trl_plus.eval.compare_frontiers` runs, against a standardised difference, with
equal true spreads. :func:`power_analysis` (seeds needed, the smallest detectable
difference, the current design's power) and :func:`power_by_seeds` (the curve the report
plots beside it) are both built on it, so the plotted curve crosses the target power at
the planned seed count.

In-process API::

    from trl_plus.eval import compare_frontiers, power_analysis
    verdict = compare_frontiers(points, "ppo", "dpo")
    plan = power_analysis(verdict["per_seed"]["ppo"], verdict["per_seed"]["dpo"], difference=0.02)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from trl_plus.errors import DataError

from .intervals import MIN_SEEDS

POWER_METHOD = "two-sided Welch t-test (the verdict's test), seed SD pooled over both methods"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _per_seed_values(values, name: str) -> np.ndarray:
    if isinstance(values, Mapping):
        values = list(values.values())
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise DataError(f"{name} must be a list of per-seed numbers, got {type(values).__name__}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
            raise DataError(f"{name} must hold finite numbers (one per seed), got {v!r}")
        out.append(float(v))
    return np.array(out)


@functools.lru_cache(maxsize=256)
def _variance_draws(n1: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed draws of the two sample variances (in units of the true variance), so that
    power is a smooth, reproducible function of the effect."""
    rng = np.random.default_rng(20_240_611)
    return rng.chisquare(n1 - 1, 20_000) / (n1 - 1), rng.chisquare(n2 - 1, 20_000) / (n2 - 1)


def welch_power(effect: float, n1: float, n2: float, alpha: float) -> float:
    """Power of the two-sided Welch t-test (the test ``compare_frontiers`` runs) against a
    standardised difference ``effect`` (the true difference over the true seed SD), with
    ``n1`` and ``n2`` seeds and equal true spreads.

    Given the two sample variances, the mean difference is normal and independent of
    them, so the rejection probability is two normal tails; it is averaged over fixed
    draws of the variances. A pooled-t formula would overstate the power of Welch's
    test with few seeds (0.80 claimed against 0.69 simulated with 3 seeds per method)."""
    from scipy import stats

    u1, u2 = _variance_draws(int(n1), int(n2))
    v1, v2 = u1 / n1, u2 / n2
    se = np.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    crit = stats.t.ppf(1 - alpha / 2, df) * se
    sd = math.sqrt(1 / n1 + 1 / n2)
    reject = stats.norm.cdf((effect - crit) / sd) + stats.norm.cdf((-effect - crit) / sd)
    return float(min(1.0, reject.mean()))


def power_by_seeds(sd: float, difference: float, alpha: float = 0.05, seeds=range(2, 21)) -> list[dict]:
    """``[{"seeds": n, "power": p}]``: the power of the verdict's Welch test to detect
    ``difference`` with ``n`` seeds per method and a seed SD of ``sd``; ``[]`` when either
    is missing or ``sd`` is not positive. The same computation as :func:`power_analysis`
    (:func:`welch_power`), so a plot of it agrees with the planned seed count."""
    if not sd or difference is None or not math.isfinite(sd) or not math.isfinite(difference) or sd <= 0:
        return []
    return [{"seeds": n, "power": welch_power(abs(difference) / sd, n, n, alpha)} for n in seeds if n >= MIN_SEEDS]


def min_detectable_effect(n1: int, n2: int, power: float, alpha: float) -> float:
    """The standardised difference that ``n1`` and ``n2`` seeds detect with probability
    ``power`` (power rises with the difference: bracket the target, then solve)."""
    from scipy.optimize import brentq

    hi = 1.0
    while welch_power(hi, n1, n2, alpha) < power and hi < 1e6:
        hi *= 2
    return brentq(lambda d: welch_power(d, n1, n2, alpha) - power, 0.0, hi, xtol=1e-10)


def seeds_needed(effect: float, power: float, alpha: float, max_seeds: int) -> int | None:
    """The fewest seeds per method (equal for both, at least ``MIN_SEEDS``) that detect the
    standardised difference ``effect`` with probability ``power``; None when even
    ``max_seeds`` do not (a zero effect is never detected)."""
    if effect == 0 or welch_power(effect, max_seeds, max_seeds, alpha) < power:
        return None
    lo_n, hi_n = MIN_SEEDS, max_seeds
    while lo_n < hi_n:
        mid = (lo_n + hi_n) // 2
        if welch_power(effect, mid, mid, alpha) >= power:
            hi_n = mid
        else:
            lo_n = mid + 1
    return lo_n


def power_analysis(
    per_seed_a,
    per_seed_b,
    difference: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    max_seeds: int = 1000,
) -> dict:
    """How many seeds a matched-KL comparison needs, from the seed numbers of one already run.

    Parameters
    ----------
    per_seed_a, per_seed_b:
        The per-seed frontier averages of the two methods (lists of floats, or the
        ``{seed: value}`` dicts of ``compare_frontiers(...)["per_seed"]``).
    difference:
        The effect to plan for: the smallest true difference that matters, in reward
        units, stated before looking at the data (the report takes it from
        ``report.min_effect``). Only its size matters. Without it no number of seeds is
        planned: planning on the observed difference (post-hoc power) only restates the
        p-value, and with no true difference it asks for anywhere from a few seeds to
        hundreds.
    alpha:
        Two-sided significance level.
    power:
        The wanted probability of detecting ``difference``.
    max_seeds:
        The largest per-method seed count searched.

    Method
    ------
    The seed-to-seed SD is pooled over both methods. Power is that of the two-sided
    Welch t-test that ``compare_frontiers`` runs, with equal true spreads: the rejection
    probability given the two sample variances (two normal tails), averaged over fixed
    draws of those variances, so it accounts for Welch's smaller degrees of freedom with
    few seeds. The plan is a guide: the observed SD from few seeds is itself uncertain.

    Returns
    -------
    dict with ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``difference`` (the stated
    effect, or None), ``observed_difference`` (``mean(a) - mean(b)``, shown, never planned
    on), ``sd`` (pooled seed SD), ``effect_size`` (``|difference| / sd``), ``alpha``,
    ``power``, ``seeds_needed`` (seeds per method, equal for both, for the wanted power;
    None when no effect is stated, the effect is 0 or more than ``max_seeds`` would be
    needed),
    ``min_detectable_difference`` (the smallest true difference the current seed counts
    detect with the wanted power), ``current_power`` (the current design's power against
    ``difference``), ``method``, ``text`` and ``reason`` (None unless something could not
    be computed). With fewer than 2 seeds for a method there is no seed SD: the computed
    fields are None and ``reason`` says why.

    Raises
    ------
    DataError
        Non-numeric or non-finite seed values, ``alpha`` or ``power`` outside (0, 1),
        ``max_seeds`` below 2.
    """
    xa = _per_seed_values(per_seed_a, "per_seed_a")
    xb = _per_seed_values(per_seed_b, "per_seed_b")
    for name, value in (("alpha", alpha), ("power", power)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise DataError(f"{name} must be in (0, 1), got {value!r}")
    if isinstance(max_seeds, bool) or not isinstance(max_seeds, (int, np.integer)) or max_seeds < MIN_SEEDS:
        raise DataError(f"max_seeds must be an integer of at least {MIN_SEEDS}, got {max_seeds!r}")
    if difference is not None and (
        isinstance(difference, bool) or not isinstance(difference, (int, float, np.number))
        or not math.isfinite(difference)
    ):
        raise DataError(f"difference must be a finite number or None, got {difference!r}")

    na, nb = xa.size, xb.size
    out = {
        "n_a": na,
        "n_b": nb,
        "mean_a": float(xa.mean()) if na else None,
        "mean_b": float(xb.mean()) if nb else None,
        "difference": None if difference is None else float(difference),
        "observed_difference": float(xa.mean() - xb.mean()) if na and nb else None,
        "sd": None,
        "effect_size": None,
        "alpha": float(alpha),
        "power": float(power),
        "seeds_needed": None,
        "min_detectable_difference": None,
        "current_power": None,
        "method": POWER_METHOD,
        "text": "",
        "reason": None,
    }
    if na < MIN_SEEDS or nb < MIN_SEEDS:
        short = " and ".join(f"{name} has {_seeds(n)}" for name, n in (("a", na), ("b", nb)) if n < MIN_SEEDS)
        out["reason"] = f"{short}; a seed-to-seed SD needs at least {MIN_SEEDS} seeds per method"
        out["text"] = f"no power analysis: {out['reason']}."
        return out

    sd = math.sqrt(((na - 1) * xa.var(ddof=1) + (nb - 1) * xb.var(ddof=1)) / (na + nb - 2))
    stated = out["difference"] is not None
    size = abs(out["difference"]) if stated else 0.0
    out["sd"] = sd
    pct = f"{power * 100:g}%"

    if not stated:
        out["reason"] = "no effect stated to plan for (give the smallest difference that matters)"
        if sd == 0:
            out["min_detectable_difference"] = 0.0
            out["text"] = "the seeds agree exactly (SD 0), so any nonzero difference is detected; no effect stated."
            return out

    if sd == 0:
        # Seeds that agree exactly leave no noise to power against: any nonzero difference
        # is detected with the fewest seeds a t-test can run on.
        out["min_detectable_difference"] = 0.0
        if size > 0:
            out.update(effect_size=math.inf, seeds_needed=MIN_SEEDS, current_power=1.0)
        else:
            out["reason"] = "the difference is 0, so no number of seeds detects it"
        out["text"] = (
            f"the seeds agree exactly (SD 0), so a difference of {_fmt(size)} is detected with "
            f"{MIN_SEEDS} seeds per method."
            if size > 0
            else "the seeds agree exactly and the difference is 0, so there is nothing to detect."
        )
        return out

    effect = size / sd
    if stated:
        out["effect_size"] = effect
        out["current_power"] = welch_power(effect, na, nb, alpha)

    out["min_detectable_difference"] = float(min_detectable_effect(na, nb, power, alpha) * sd)

    if not stated:
        out["text"] = (
            f"with a seed-to-seed SD of {_fmt(sd)}, the current {na} and {nb} seeds detect a true difference of "
            f"{_fmt(out['min_detectable_difference'])} with {pct} power at alpha {alpha:g}; no effect was stated, "
            "so no number of seeds is planned."
        )
        return out
    out["seeds_needed"] = seeds_needed(effect, power, alpha, max_seeds)
    if size == 0:
        out["reason"] = "the difference is 0, so no number of seeds detects it"
    elif out["seeds_needed"] is None:
        out["reason"] = f"more than max_seeds={max_seeds} seeds per method would be needed"

    needed = (f"needs {out['seeds_needed']} seeds per method" if out["seeds_needed"] is not None
              else f"cannot be planned ({out['reason']})")
    out["text"] = (
        f"with a seed-to-seed SD of {_fmt(sd)}, detecting a difference of {_fmt(size)} with {pct} power "
        f"at alpha {alpha:g} {needed}; the current {na} and {nb} seeds detect "
        f"{_fmt(out['min_detectable_difference'])} and have {out['current_power'] * 100:.0f}% power "
        f"against {_fmt(size)}."
    )
    return out
