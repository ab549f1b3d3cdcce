"""The Gao et al. (2022) form of gold reward against KL, ``gain = d (alpha - beta log d)`` with
``d = sqrt(KL)``: the curve, its least-squares fit and where the fit peaks."""

from __future__ import annotations

import math

import numpy as np

from .values import num

PEAK_REACH = 10.0  # a fitted peak beyond this many times the largest KL fitted is "not within reach"


def gao_curve(d, alpha: float, beta: float):
    """The gain over the reference at ``d = sqrt(KL)`` under the Gao et al. (2022) form for
    best-of-n and RL, ``d * (alpha - beta * log d)``; 0 at d = 0 (its limit)."""
    d = np.asarray(d, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = d * (alpha - beta * np.log(d))
    return np.where(d > 0, out, 0.0)


def gao_peak(alpha, beta, max_kl=None, reach: float = PEAK_REACH) -> dict:
    """Where the fitted gain ``d (alpha - beta log d)`` peaks, in words and numbers; never raises.

    The gain peaks at ``d* = exp(alpha / beta - 1)`` when beta > 0 (with beta <= 0 it never
    turns down). Everything is computed in log space, so a large ``alpha / beta`` (a curve
    that keeps rising far past the data; ``exp`` or ``d* ** 2`` would overflow a float) is an
    answer, not an error: a peak beyond ``reach`` times ``max_kl`` (the largest KL the fit
    saw), or one too far to represent, is ``"beyond_reach"``, "no peak within reach".

    Returns ``{"status", "peak_sqrt_kl", "peak_kl", "text"}``: ``status`` is ``"no_peak"``
    (beta <= 0 or not a number), ``"beyond_reach"``, ``"beyond_data"`` (a peak past
    ``max_kl`` but within reach: an extrapolation) or ``"within_data"``; the two numbers are
    None unless the peak is within reach.
    """
    none = {"peak_sqrt_kl": None, "peak_kl": None}
    a, b = num(alpha), num(beta)
    if a is None or b is None or b <= 0:
        return {"status": "no_peak", **none,
                "text": "the fitted gold curve never turns down (beta <= 0): no peak"}
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        log_d = float(np.float64(a) / np.float64(b)) - 1.0  # may be +inf for a tiny beta
    log_kl = 2.0 * log_d
    mk = num(max_kl)
    limit = math.log(reach * mk) if mk is not None and mk > 0 and reach > 0 else 700.0  # exp(700) is finite
    limit = min(limit, 700.0)
    if not math.isfinite(log_kl) or log_kl > limit:
        where = f"beyond KL {reach * mk:.3g} ({reach:g} times the largest KL measured)" if mk else "beyond any KL"
        return {"status": "beyond_reach", **none,
                "text": f"no peak within reach: the fitted gold curve keeps rising {where}"}
    peak_kl = math.exp(log_kl) if log_kl > -745 else 0.0
    d_star = math.exp(log_d) if log_d > -745 else 0.0
    status = "beyond_data" if mk is not None and peak_kl > mk else "within_data"
    side = "beyond the last checkpoint" if status == "beyond_data" else "within the checkpoints' range"
    return {"status": status, "peak_sqrt_kl": d_star, "peak_kl": peak_kl,
            "text": f"the fitted gold curve peaks at KL {peak_kl:.2f}, {side}"}


def fit_gao(d, gain, reach: float = PEAK_REACH) -> dict | None:
    """Least-squares fit of ``gain = d * (alpha - beta * log d)``, linear in (alpha, beta)
    with the features ``d`` and ``-d log d``. Never raises on numbers.

    Points with ``d <= 0`` carry no information (the form is 0 there) and are dropped, as are
    missing or non-finite values. Returns ``{"alpha", "beta", "rmse", "points", "peak"}``
    (``peak``: :func:`gao_peak` with the largest fitted KL, so a large alpha/beta reads "no
    peak within reach"), or None with fewer than two usable points at ``d > 0``, when the
    features are collinear (all checkpoints at the same KL) or the fit is not finite.
    """
    pairs = [(x, y) for x, y in ((num(x), num(y)) for x, y in zip(d, gain))
             if x is not None and y is not None and x > 0]
    if len(pairs) < 2:
        return None
    xs = np.array([p[0] for p in pairs])
    ys = np.array([p[1] for p in pairs])
    design = np.column_stack([xs, -xs * np.log(xs)])
    try:
        with np.errstate(all="ignore"):
            coef, _, rank, _ = np.linalg.lstsq(design, ys, rcond=None)
            resid = ys - design @ coef
            rmse = float(math.sqrt(float(np.mean(resid ** 2))))
    except (np.linalg.LinAlgError, ValueError, OverflowError):
        return None
    if rank < 2:
        return None
    alpha, beta = float(coef[0]), float(coef[1])
    if not (math.isfinite(alpha) and math.isfinite(beta) and math.isfinite(rmse)):
        return None
    return {"alpha": alpha, "beta": beta, "rmse": rmse, "points": len(pairs),
            "peak": gao_peak(alpha, beta, float(xs.max()) ** 2, reach)}
