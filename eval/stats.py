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


LC_MAX_ITER = 50
_Z_CLIP = 35.0  # |z| beyond which sigmoid(z) is 0 or 1 in double precision


def length_controlled_win_rate(
    scores: Sequence[float], length_differences: Sequence[float], weights: Sequence[float] | None = None
) -> float:
    """Win rate at zero length difference.

    A logistic regression of the outcome (1 win, 0.5 tie, 0 loss; a tie enters as half a
    win and half a loss) on the standardised length difference (candidate minus
    reference, divided by its standard deviation, not centred, so that zero still means
    "same length"), read off at zero: ``sigmoid(intercept)``. This is the idea of
    AlpacaEval 2's length-controlled win rate with the instruction term left out (one
    prompt set, one reference).

    The fit is unpenalised maximum likelihood, solved by Newton's method. Where it has no
    finite optimum or no length to control for, the result is the plain win rate: all
    wins or all losses (that value), no spread in length difference (the slope is 0),
    and outcomes perfectly (or quasi-) separated by length, where the slope diverges and
    the intercept's limit depends on where in the gap the threshold falls.

    ``weights`` (one per pair, default 1) weigh the pairs in the fit: ``win_rate_summary``
    gives each pair 1 / (its prompt's judged pairs), so every prompt weighs the same.
    """
    y = np.asarray(scores, dtype=float)
    d = np.asarray(length_differences, dtype=float)
    if y.size == 0:
        return math.nan
    w = np.ones(y.size) if weights is None else np.asarray(weights, dtype=float)
    return float(_lc_fit(d, y, w[None, :])[0][0])


def _lc_fit(d: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The length-controlled win rate of each row of weights ``w`` (shape ``(R, n)``; a
    bootstrap resample is its counts) over the pairs ``(d, y)``, all rows fitted at once.

    Returns the estimates and a mask of the rows that fell back to the plain win rate.
    """
    w = np.asarray(w, dtype=float)
    used = w > 0
    plain = (w * y).sum(axis=1) / w.sum(axis=1)
    # In one dimension the optimum is infinite exactly when some threshold on d puts every
    # pair carrying win mass on one side and every pair carrying loss mass on the other;
    # this also covers all-wins, all-losses and zero spread.
    wins, losses = used & (y > 0), used & (y < 1)
    lo_win = np.where(wins, d, np.inf).min(axis=1)
    hi_win = np.where(wins, d, -np.inf).max(axis=1)
    lo_loss = np.where(losses, d, np.inf).min(axis=1)
    hi_loss = np.where(losses, d, -np.inf).max(axis=1)
    fallback = (lo_win >= hi_loss) | (hi_win <= lo_loss)
    out = plain.copy()
    fit = ~fallback
    if fit.any():
        # the intercept does not depend on the scale of x, and Newton steps are invariant
        # to it; one scale for every resample keeps z of order one
        x = d / d.std()
        out[fit] = _newton_intercept(x, y, w[fit], plain[fit])
    return out, fallback


def _logistic_state(a, b, x, y, w):
    """Loss and sigmoid of ``a + b x`` for each row, from one exponential per pair."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.multiply.outer(b, x)
        z += a[:, None]
    e = np.abs(z)
    np.negative(e, out=e)
    np.exp(e, out=e)  # exp(-|z|) never overflows
    # softplus(z) - y z is the soft-label log-loss, stable for any z
    per_pair = np.log1p(e)
    per_pair += np.maximum(z, 0.0)
    per_pair -= y * z
    loss = np.einsum("ij,ij->i", w, per_pair)
    q = 1.0 / (1.0 + e)
    return loss, np.where(z >= 0, q, e * q)


def _newton_intercept(x, y, w, start):
    """sigmoid(intercept) of the weighted soft-label logistic fits ``a + b x``, one per row
    of ``w``, by Newton steps with step halving (the loss is convex and each row has a
    finite optimum, so this converges; the cap on iterations only guards the arithmetic)."""
    a = np.log(start / (1 - start))
    b = np.zeros_like(a)
    # at b = 0 every pair has the same z = a: no exponential per pair needed
    loss = w.sum(axis=1) * np.logaddexp(0.0, a) - a * (w @ y)
    p = np.broadcast_to(start[:, None], w.shape)
    wy = w * y
    xx = x * x
    for _ in range(LC_MAX_ITER):
        wp = w * p
        r = wp - wy
        h = wp - wp * p  # w p (1 - p)
        ga, gb = r.sum(axis=1), r @ x
        haa, hab, hbb = h.sum(axis=1), h @ x, h @ xx
        det = haa * hbb - hab * hab
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            da = (hbb * ga - hab * gb) / det
            db = (haa * gb - hab * ga) / det
        singular = ~(np.isfinite(da) & np.isfinite(db))
        da[singular], db[singular] = 0.0, 0.0
        # near the optimum a Newton step is the distance left to it, and the step after
        # leaves an error of order its square: far below what any caller resolves
        converged = max(float(np.abs(da).max()), float(np.abs(db).max())) < 1e-4
        na, nb = a - da, b - db
        if converged:
            a, b = na, nb
            break
        new_loss, new_p = _logistic_state(na, nb, x, y, w)
        worse = np.flatnonzero(~(new_loss <= loss + 1e-12 * np.abs(loss)))
        step = 1.0
        while worse.size and step > 1e-9:  # rare: an overshoot far from the optimum
            step /= 2
            ta, tb = a[worse] - step * da[worse], b[worse] - step * db[worse]
            tl, tp = _logistic_state(ta, tb, x, y, w[worse])
            ok = tl <= loss[worse] + 1e-12 * np.abs(loss[worse])  # False for NaN too
            done = worse[ok]
            na[done], nb[done], new_loss[done], new_p[done] = ta[ok], tb[ok], tl[ok], tp[ok]
            worse = worse[~ok]
        if worse.size:  # no decrease left: already at the optimum to rounding
            na[worse], nb[worse], new_loss[worse], new_p[worse] = a[worse], b[worse], loss[worse], p[worse]
        a, b, loss, p = na, nb, new_loss, new_p
    return 1 / (1 + np.exp(-np.clip(a, -_Z_CLIP, _Z_CLIP)))


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


def lc_bootstrap_estimates(scores, diff, ids, *, n_resamples: int = 1000, seed: int = 0,
                           counts: np.ndarray | None = None,
                           pair_weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The length-controlled win rate of each bootstrap resample of prompts (a prompt's
    pairs stay together), and a mask of those that fell back to their plain win rate.

    ``counts`` (``(n_resamples, n_prompts)``, prompts in first-seen order of ``ids``)
    replaces the resamples drawn from ``seed``. Every resample is fitted at once, from its
    counts as weights: no resampled rows are built. ``pair_weights`` (one per pair,
    default 1) multiply those counts, as in the point estimate's fit.
    """
    order: dict = {}
    group = np.asarray([order.setdefault(g, len(order)) for g in ids], dtype=int)
    if counts is None:
        counts = resample_counts(len(order), n_resamples, seed)
    weights = np.asarray(counts, dtype=float)[:, group]
    if pair_weights is not None:
        weights = weights * np.asarray(pair_weights, dtype=float)[None, :]
    return _lc_fit(np.asarray(diff, dtype=float), np.asarray(scores, dtype=float), weights)


def _lc_bootstrap(scores, diff, ids, n_resamples: int, seed: int, confidence: float) -> tuple[float, float]:
    stats, _ = lc_bootstrap_estimates(scores, diff, ids, n_resamples=n_resamples, seed=seed)
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
