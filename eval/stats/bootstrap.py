"""The percentile bootstrap over prompts: resampling, its intervals, and the mean of a
score with its interval.

Every bootstrap of the project resamples prompts (a prompt's samples stay together), so an
interval reflects the variation over the prompt set, not over the judge or training; the
intervals over training seeds are t intervals (:mod:`.intervals`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000


def bootstrap_ci(
    values: Sequence[float],
    statistic=np.mean,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` over ``values`` (one value per prompt).

    ``statistic`` is applied along axis 1 of an ``(n_resamples, n)`` array.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    stats = statistic(x[idx], axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def resample_counts(n_groups: int, n_resamples: int, seed: int) -> np.ndarray:
    """How often each of ``n_groups`` prompts is drawn in each of ``n_resamples`` bootstrap
    resamples (shape ``(n_resamples, n_groups)``, rows summing to ``n_groups``)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    return counts_of(picks, n_groups)


def counts_of(picks: np.ndarray, n_groups: int) -> np.ndarray:
    """Bootstrap counts from drawn group indices (one row of picks per resample)."""
    picks = np.asarray(picks)
    flat = picks + n_groups * np.arange(picks.shape[0])[:, None]
    return np.bincount(flat.ravel(), minlength=picks.shape[0] * n_groups).reshape(picks.shape[0], n_groups)


def mean_with_ci(values: Sequence[float | None], *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 confidence: float = 0.95) -> dict:
    """Mean, standard error and bootstrap CI of scores (``None``: counted as missing)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    out = {"n": int(x.size), "missing": len(values) - int(x.size)}
    if x.size == 0:
        return {**out, "mean": math.nan, "stderr": math.nan, "ci": [math.nan, math.nan]}
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return {**out, "mean": float(x.mean()), "stderr": se,
            "ci": list(bootstrap_ci(x, n_resamples=n_resamples, seed=seed, confidence=confidence))}
