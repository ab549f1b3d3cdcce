"""Win rates and their uncertainty: bootstrap CIs over prompts, paired differences, and a
length-controlled win rate (after AlpacaEval 2).

Inputs are per-pair probabilities that the candidate beats the reference (a judge's
output), with the prompt each pair belongs to. ``None`` marks a pair the judge failed on:
it is counted, never silently dropped, and left out of the rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000
TIE_TOLERANCE = 1e-6


def outcome_score(p: float, tie_tolerance: float = TIE_TOLERANCE) -> float:
    """1 for a win, 0.5 for a tie, 0 for a loss."""
    if p > 0.5 + tie_tolerance:
        return 1.0
    if p < 0.5 - tie_tolerance:
        return 0.0
    return 0.5


def _group(values: Sequence[float], groups: Sequence) -> tuple[np.ndarray, list]:
    """Per-group means (one group per prompt), in first-seen order."""
    order: dict = {}
    for g in groups:
        order.setdefault(g, len(order))
    sums = np.zeros(len(order))
    counts = np.zeros(len(order))
    for v, g in zip(values, groups):
        sums[order[g]] += v
        counts[order[g]] += 1
    return sums / np.maximum(counts, 1), list(order)


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


def length_controlled_win_rate(
    scores: Sequence[float], length_differences: Sequence[float]
) -> float:
    """Win rate at zero length difference.

    A logistic regression of the outcome (1 win, 0.5 tie, 0 loss; a tie enters as half a
    win and half a loss through sample weights) on the standardised length difference
    (candidate minus reference, divided by its standard deviation, not centred, so that
    zero still means "same length"), read off at zero: ``sigmoid(intercept)``. This is
    the idea of AlpacaEval 2's length-controlled win rate with the instruction term left
    out (one prompt set, one reference).
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(scores, dtype=float)
    d = np.asarray(length_differences, dtype=float)
    if y.size == 0:
        return math.nan
    if np.all(y == y[0]) and y[0] in (0.0, 1.0):
        return float(y[0])  # all wins or all losses: the regression has no finite optimum
    std = d.std()
    x = (d / std if std > 0 else np.zeros_like(d)).reshape(-1, 1)
    features = np.vstack([x, x])
    labels = np.concatenate([np.ones_like(y), np.zeros_like(y)])
    weights = np.concatenate([y, 1 - y])
    model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000, tol=1e-10)
    model.fit(features, labels, sample_weight=weights)
    return float(1 / (1 + math.exp(-model.intercept_[0])))


def win_rate_summary(
    probabilities: Sequence[float | None],
    prompt_ids: Sequence,
    candidate_lengths: Sequence[float],
    reference_lengths: Sequence[float],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    tie_tolerance: float = TIE_TOLERANCE,
    confidence: float = 0.95,
    lc_resamples: int | None = None,
) -> dict:
    """Every number of one candidate-vs-reference comparison under one judge.

    The bootstrap resamples prompts (a prompt with several samples stays together), so
    the CI reflects the variation over the prompt set, not over the judge or training.
    """
    n_pairs = len(probabilities)
    ok = [i for i, p in enumerate(probabilities) if p is not None]
    failed = n_pairs - len(ok)
    p = np.asarray([probabilities[i] for i in ok], dtype=float)
    ids = [prompt_ids[i] for i in ok]
    scores = np.asarray([outcome_score(v, tie_tolerance) for v in p])
    len_c = np.asarray([candidate_lengths[i] for i in ok], dtype=float)
    len_r = np.asarray([reference_lengths[i] for i in ok], dtype=float)
    out = {
        "pairs": n_pairs,
        "judged": len(ok),
        "failed": failed,
        "wins": int((scores == 1).sum()),
        "ties": int((scores == 0.5).sum()),
        "losses": int((scores == 0).sum()),
        "mean_length": float(len_c.mean()) if len(ok) else math.nan,
        "mean_reference_length": float(len_r.mean()) if len(ok) else math.nan,
        "confidence": confidence,
        "bootstrap_resamples": n_resamples,
        "seed": seed,
    }
    if not ok:
        out.update(win_rate=math.nan, win_rate_ci=[math.nan, math.nan], soft_win_rate=math.nan,
                   soft_win_rate_ci=[math.nan, math.nan], tie_rate=math.nan, lc_win_rate=math.nan,
                   lc_win_rate_ci=[math.nan, math.nan], per_prompt={})
        return out
    per_prompt, order = _group(scores, ids)
    per_prompt_soft, _ = _group(p, ids)
    out["win_rate"] = float(scores.mean())
    out["win_rate_ci"] = list(bootstrap_ci(per_prompt, n_resamples=n_resamples, seed=seed, confidence=confidence))
    out["soft_win_rate"] = float(p.mean())
    out["soft_win_rate_ci"] = list(
        bootstrap_ci(per_prompt_soft, n_resamples=n_resamples, seed=seed + 1, confidence=confidence)
    )
    out["tie_rate"] = float((scores == 0.5).mean())
    diff = len_c - len_r
    out["lc_win_rate"] = length_controlled_win_rate(scores, diff)
    out["lc_win_rate_ci"] = list(
        _lc_bootstrap(scores, diff, ids, lc_resamples or min(n_resamples, 1000), seed + 2, confidence)
    )
    out["per_prompt"] = {str(k): float(v) for k, v in zip(order, per_prompt)}
    return out


def _lc_bootstrap(scores, diff, ids, n_resamples: int, seed: int, confidence: float) -> tuple[float, float]:
    groups: dict = {}
    for i, g in enumerate(ids):
        groups.setdefault(g, []).append(i)
    members = list(groups.values())
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_resamples):
        pick = rng.integers(0, len(members), size=len(members))
        rows = np.concatenate([members[j] for j in pick])
        stats.append(length_controlled_win_rate(scores[rows], diff[rows]))
    alpha = (1 - confidence) / 2
    lo, hi = np.nanquantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_difference(
    per_prompt_a: dict,
    per_prompt_b: dict,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Win rate of candidate A minus that of candidate B against the same reference.

    Uses the per-prompt scores of each (``win_rate_summary(...)["per_prompt"]``) on the
    prompts both have: the bootstrap resamples those prompts jointly, so the CI of the
    difference is narrower than the two separate CIs suggest when A and B agree on hard
    prompts.
    """
    common = [k for k in per_prompt_a if k in per_prompt_b]
    a = np.asarray([per_prompt_a[k] for k in common], dtype=float)
    b = np.asarray([per_prompt_b[k] for k in common], dtype=float)
    d = a - b
    if d.size == 0:
        return {"prompts": 0, "difference": math.nan, "ci": [math.nan, math.nan]}
    lo, hi = bootstrap_ci(d, n_resamples=n_resamples, seed=seed, confidence=confidence)
    return {
        "prompts": int(d.size),
        "win_rate_a": float(a.mean()),
        "win_rate_b": float(b.mean()),
        "difference": float(d.mean()),
        "ci": [lo, hi],
        "confidence": confidence,
        "significant": bool(lo > 0 or hi < 0),
    }


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
