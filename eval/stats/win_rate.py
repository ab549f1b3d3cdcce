"""Win rates and their uncertainty: bootstrap CIs over prompts, paired differences, and a
length-controlled win rate (after AlpacaEval 2).

Inputs are per-pair probabilities that the candidate beats the reference (a judge's
output), with the prompt each pair belongs to. ``None`` marks a pair the judge failed on:
it is counted, never silently dropped, and left out of the rates.

The prompt is the unit of every rate and of its interval: a prompt's judged pairs are
averaged first, each rate is the mean over prompts of those averages, and the bootstrap
resamples prompts. (Averaging over pairs instead weighs a prompt by how many of its pairs
the judge answered, while the interval weighs prompts equally: with several samples per
prompt and some judge failures the two disagree, and the interval could exclude its own
estimate.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .bootstrap import DEFAULT_RESAMPLES, bootstrap_ci
from .length_control import lc_bootstrap_estimates, length_controlled_win_rate

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
    Every rate is over the same unit as its interval: each prompt's judged pairs are
    averaged first and the rate is the mean over prompts (``per_prompt``), so a prompt on
    which the judge failed for some pairs weighs as much as any other; the
    length-controlled fit gives each pair 1 / (its prompt's judged pairs) for the same
    reason. ``wins``, ``ties`` and ``losses`` count pairs.
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
                   lc_win_rate_ci=[math.nan, math.nan], lc_fallback_resamples=0, prompts_judged=0,
                   per_prompt={})
        return out
    per_prompt, order = _group(scores, ids)
    per_prompt_soft, _ = _group(p, ids)
    per_prompt_ties, _ = _group((scores == 0.5).astype(float), ids)
    out["win_rate"], out["win_rate_ci"] = _prompt_mean_and_ci(per_prompt, n_resamples, seed, confidence)
    out["soft_win_rate"], out["soft_win_rate_ci"] = _prompt_mean_and_ci(per_prompt_soft, n_resamples, seed + 1,
                                                                        confidence)
    out["tie_rate"] = float(per_prompt_ties.mean())
    out["prompts_judged"] = len(order)
    diff = len_c - len_r
    weights = _prompt_weights(ids)
    out["lc_win_rate"] = length_controlled_win_rate(scores, diff, weights)
    lc_stats, lc_fallback = lc_bootstrap_estimates(scores, diff, ids, n_resamples=lc_resamples or min(n_resamples, 1000),
                                                   seed=seed + 2, pair_weights=weights)
    alpha = (1 - confidence) / 2
    out["lc_win_rate_ci"] = [float(v) for v in np.nanquantile(lc_stats, [alpha, 1 - alpha])]
    # resamples whose length regression had no finite optimum enter with their plain win rate
    out["lc_fallback_resamples"] = int(lc_fallback.sum())
    out["per_prompt"] = {str(k): float(v) for k, v in zip(order, per_prompt)}
    return out


def _prompt_mean_and_ci(per_prompt: np.ndarray, n_resamples: int, seed: int, confidence: float
                        ) -> tuple[float, list[float]]:
    """The mean over prompts and its percentile bootstrap CI over the same prompts.

    The resampled means are centred on the estimate, so the percentile interval holds it;
    what can still push it out by a last bit is rounding (every resample giving the same
    value, summed in another order than the estimate). ``min``/``max`` remove that.
    """
    estimate = float(np.mean(per_prompt))
    lo, hi = bootstrap_ci(per_prompt, n_resamples=n_resamples, seed=seed, confidence=confidence)
    return estimate, [min(lo, estimate), max(hi, estimate)]


def _prompt_weights(ids: Sequence) -> np.ndarray:
    """One weight per pair, 1 / (pairs of its prompt): every prompt weighs 1 in total."""
    counts: dict = {}
    for g in ids:
        counts[g] = counts.get(g, 0) + 1
    return np.asarray([1.0 / counts[g] for g in ids], dtype=float)


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
