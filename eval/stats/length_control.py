"""A length-controlled win rate (after AlpacaEval 2): the win rate at zero length
difference, from a logistic regression of the outcome on the length difference, and its
bootstrap over prompts with every resample fitted at once."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .bootstrap import resample_counts


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
