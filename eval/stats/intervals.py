"""Intervals over a few independent replicates, and the normal tails of z-tests.

Every t-interval of the project is computed here:

- :func:`t_interval`: the mean of per-seed numbers with Student's t interval (the report's
  rows per method and per benchmark task);
- :func:`welch_interval`: one group's mean minus another's, with Welch's t interval and
  two-sided p-value (the matched-KL verdict of :func:`~trl_plus.eval.compare_frontiers`);
- :func:`offset_interval`: a group's mean minus an estimate that carries its own standard
  error (each method against best-of-n);

with the degrees of freedom of the last two from one Welch-Satterthwaite formula
(:func:`satterthwaite_df`). Besides them: :func:`wilson_interval` for a proportion, and
:func:`normal_sf` / :func:`normal_isf` for one-sided z-tests.

The replicate is the seed: what varies between training runs is shared by everything one
run produces, so a seed is one observation and an interval needs at least
:data:`MIN_SEEDS` of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

MIN_SEEDS = 2  # the fewest replicates per group a t interval (a sample SD) can be formed from
Z95 = 1.959963984540054  # the two-sided 95% normal quantile


def t_quantile(confidence: float, df: float) -> float:
    """The t quantile whose two-sided interval holds ``confidence``: ``t.ppf((1 + c) / 2, df)``."""
    from scipy import stats

    return stats.t.ppf((1 + confidence) / 2, df)


def satterthwaite_df(parts: Sequence[tuple[float, float]]) -> float | None:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variance estimates.

    ``parts`` are ``(variance, degrees of freedom)`` pairs, each variance already that of
    its term in the sum (a group's sample variance divided by its size). A term of zero
    variance adds nothing. None when every term is zero (or too small to square): the
    caller says what holds then.
    """
    denom = sum(v**2 / dof for v, dof in parts if v > 0)
    if not denom > 0:
        return None
    return sum(v for v, _ in parts) ** 2 / denom


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean of per-seed numbers with a t interval over seeds (None with fewer than two).

    Returns ``{"mean", "ci", "seeds", "sd"}``: ``mean`` None without values, ``ci``
    ``[lo, hi]`` or None, ``seeds`` the number of values, ``sd`` their sample SD (absent
    with fewer than two).
    """
    n = len(values)
    mean = sum(values) / n if n else None
    if n < MIN_SEEDS:
        return {"mean": mean, "ci": None, "seeds": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci": [mean - half, mean + half], "seeds": n, "sd": sd}


def welch_interval(xa: np.ndarray, xb: np.ndarray, confidence: float = 0.95) -> tuple[float, list[float], float, float]:
    """``mean(xa) - mean(xb)`` with Welch's t interval: ``(difference, [lo, hi], df, p)``.

    Each group needs at least two values. The standard error adds the two groups' sample
    variances over their sizes, and the degrees of freedom are Welch-Satterthwaite's, so
    the interval stays valid with a handful of replicates and unequal spreads. ``p`` is
    the two-sided p-value of no difference. When both groups are constant the interval
    is the point, ``df`` is ``na + nb - 2`` and ``p`` is 1 for no difference, else 0.
    """
    from scipy import stats

    na, nb = xa.size, xb.size
    diff = float(xa.mean() - xb.mean())
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    se2 = va + vb
    if se2 > 0:
        df = satterthwaite_df([(va, na - 1), (vb, nb - 1)])
        if df is None:  # variances too small to square: the normal limit
            df = math.inf
        half = float(t_quantile(confidence, df) * math.sqrt(se2))
        p = float(2 * stats.t.sf(abs(diff) / math.sqrt(se2), df))
    else:
        df, half = float(na + nb - 2), 0.0
        p = 1.0 if diff == 0 else 0.0
    return diff, [diff - half, diff + half], float(df), p


def offset_interval(values: Sequence[float], reference: float, reference_se: float, reference_n: int | None,
                    confidence: float = 0.95) -> dict:
    """``mean(values) - reference`` with a t interval, where ``values`` are independent
    replicates (at least two: seeds) and ``reference`` an estimate with its own standard
    error ``reference_se`` over ``reference_n`` units (prompts; fewer than 2 counts as 2).

    The variance of the difference is the replicates' sample variance over their number
    plus ``reference_se`` squared, with Welch-Satterthwaite degrees of freedom; with no
    spread at all the degrees of freedom are the replicates' ``n - 1``.

    Returns ``{"difference", "ci", "df"}``.
    """
    vals = np.asarray(values, dtype=float)
    s = vals.size
    v_seed = float(np.var(vals, ddof=1)) / s
    v_ref = reference_se ** 2
    diff = float(vals.mean()) - reference
    se = math.sqrt(v_seed + v_ref)
    n_ref = max(int(reference_n or 0), 2)
    df = satterthwaite_df([(v_seed, s - 1), (v_ref, n_ref - 1)])
    if df is None:
        df = float(s - 1)
    half = float(t_quantile(confidence, df)) * se
    return {"difference": diff, "ci": [diff - half, diff + half], "df": df}


def wilson_interval(k: int, n: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval for k successes in n trials (95% with the default z), or
    None when n is 0."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_isf(p: float) -> float:
    """The z with P(Z > z) = p, for 0 < p < 1."""
    return NormalDist().inv_cdf(1.0 - p)
