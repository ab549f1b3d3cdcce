"""Diagnostics behind four report sections, as pure functions over numbers the caller has.

- ``overoptimisation``: does a run's gold reward fall while the reward model's score keeps
  rising (reward over-optimisation), with the Gao et al. (2022) fit of gold against sqrt(KL).
- ``best_of_n``: the best-of-n baseline on the SFT model's samples, its gold reward
  rank-weighted over all samples and its KL estimated with ties and duplicates counted.
- ``preference_quality``: length bias, duplicates, identical pairs and gold margins of the
  training pairs, and the reward model's agreement with the gold reward on held-out pairs.

Nothing here loads a model or imports torch: the caller passes the scores in. Every result
is plain JSON (floats, ints, lists, dicts, strings, None); a value that cannot be computed is
None, never NaN.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from statistics import NormalDist

import numpy as np

DEFAULT_NS = (1, 2, 4, 8, 16)
GOLD_MARGIN_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_LISTED_ROWS = 200  # row indices listed per finding; the counts are always complete
Z95 = 1.959963984540054


def _num(x) -> float | None:
    """``x`` as a Python float, or None when missing or not finite."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt_pair(a: float, b: float, signed: bool = False, least: int = 1, most: int = 4) -> tuple[str, str]:
    """Format two numbers with the fewest decimals (at least ``least``) that tell them apart,
    so a note never reads "rose from 0.9 to 0.9"."""
    spec = "+" if signed else ""
    for digits in range(least, most + 1):
        sa, sb = f"{a:{spec}.{digits}f}", f"{b:{spec}.{digits}f}"
        if sa != sb:
            return sa, sb
    return sa, sb


# ---------------------------------------------------------------------------------------------
# 1. Reward over-optimisation
# ---------------------------------------------------------------------------------------------

OVEROPT_ALPHA = 0.05  # the chance, per run, that a run whose gold reward never falls is flagged
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
    a, b = _num(alpha), _num(beta)
    if a is None or b is None or b <= 0:
        return {"status": "no_peak", **none,
                "text": "the fitted gold curve never turns down (beta <= 0): no peak"}
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        log_d = float(np.float64(a) / np.float64(b)) - 1.0  # may be +inf for a tiny beta
    log_kl = 2.0 * log_d
    mk = _num(max_kl)
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
    pairs = [(x, y) for x, y in ((_num(x), _num(y)) for x, y in zip(d, gain))
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


def _checkpoints(run: dict, sft: dict | None) -> list[dict]:
    """A run's checkpoints with a KL estimate, in KL order (ties by step), preceded by the SFT
    model at KL 0 when it is given. A negative Monte-Carlo KL estimate is read as 0."""
    pts = []
    for p in run.get("points") or []:
        kl = _num(p.get("kl"))
        if kl is None:
            continue
        se = _num(p.get("gold_stderr"))
        pts.append({"step": p.get("step"), "kl": max(kl, 0.0), "gold": _num(p.get("gold")),
                    "proxy": _num(p.get("proxy")), "gold_stderr": se if se is not None and se >= 0 else None,
                    "sft": False})
    pts.sort(key=lambda p: (p["kl"], p["step"] if isinstance(p["step"], (int, float)) else 0))
    if sft is not None:
        se = _num(sft.get("gold_stderr"))
        pts.insert(0, {"step": 0, "kl": 0.0, "gold": _num(sft.get("gold")), "proxy": _num(sft.get("proxy")),
                       "gold_stderr": se if se is not None and se >= 0 else None, "sft": True})
    return pts


def _normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _normal_isf(p: float) -> float:
    """The z with P(Z > z) = p, for 0 < p < 1."""
    return NormalDist().inv_cdf(1.0 - p)


def _drop_tests(pts: list[dict], tol: float, alpha: float) -> tuple[list[dict], dict]:
    """Every (earlier, later) pair in KL order where the proxy rose, tested for a fall of gold.

    With standard errors, each pair's fall is a one-sided z-test: z = (gold_earlier -
    gold_later) / sqrt(se_earlier^2 + se_later^2) (conservative: checkpoints scored on the
    same prompts are positively correlated, so the true error of the difference is smaller).
    A point without ``gold_stderr`` borrows its partner's (same prompts, similar spread);
    pairs where neither has one are judged against the fixed ``tol``, the only rule left
    without a measure of noise. The z-tested pairs are one family per run: Holm's step-down
    correction at ``alpha`` over all of them, so a run whose gold reward never truly falls
    is flagged with probability at most ``alpha``, however many checkpoints it has and
    however the pairs are correlated. Any earlier checkpoint counts, not only the
    neighbour, so a slow decline over many checkpoints is still caught.

    Returns (the flagged pairs, largest fall first; a summary ``{"pairs_tested",
    "pairs_z", "pairs_tolerance", "alpha"}``).
    """
    tested = []
    for i, a in enumerate(pts):
        if a["gold"] is None or a["proxy"] is None:
            continue
        for b in pts[i + 1:]:
            if b["gold"] is None or b["proxy"] is None or not b["proxy"] > a["proxy"]:
                continue
            sa, sb = a["gold_stderr"], b["gold_stderr"]
            sa, sb = (sa if sa is not None else sb), (sb if sb is not None else sa)
            se = math.sqrt(sa ** 2 + sb ** 2) if sa is not None else None
            drop = a["gold"] - b["gold"]
            row = {"from_kl": a["kl"], "to_kl": b["kl"], "from_step": a["step"], "to_step": b["step"],
                   "from_sft": a["sft"], "gold_from": a["gold"], "gold_to": b["gold"],
                   "proxy_from": a["proxy"], "proxy_to": b["proxy"], "drop": drop, "stderr": se,
                   "z": None, "p_value": None, "p_holm": None, "threshold": None,
                   "test": "tolerance" if se is None else "z"}
            if se is not None and se > 0:
                row["z"] = drop / se
                row["p_value"] = _normal_sf(row["z"])
            elif se is not None:  # no noise at all: any fall is a fall
                row["p_value"] = 0.0 if drop > 0 else 1.0
            tested.append(row)
    z_rows = sorted((r for r in tested if r["test"] == "z"), key=lambda r: r["p_value"])
    k = len(z_rows)
    flagged, running, rejecting = [], 0.0, True
    for j, r in enumerate(z_rows):
        # Holm: the j-th smallest p-value is compared with alpha / (k - j); adjusted p-values
        # are the running maximum of (k - j) p, so they never decrease.
        running = max(running, min(1.0, (k - j) * r["p_value"]))
        r["p_holm"] = running
        level = alpha / (k - j)
        r["threshold"] = (r["stderr"] or 0.0) * _normal_isf(level)
        rejecting = rejecting and r["p_value"] <= level
        if rejecting and r["drop"] > 0:
            flagged.append(r)
    for r in tested:
        if r["test"] == "tolerance":
            r["threshold"] = tol
            if r["drop"] > tol:
                flagged.append(r)
    flagged.sort(key=lambda r: -r["drop"])
    summary = {"pairs_tested": len(tested), "pairs_z": k, "pairs_tolerance": len(tested) - k, "alpha": alpha}
    return flagged, summary


def _overopt_note(pts: list[dict], drop: dict | None, peak: dict | None, tests: dict) -> str:
    ckpts = [p for p in pts if not p["sft"]]
    if len(ckpts) < 1 or len([p for p in pts if p["gold"] is not None]) < 2:
        return f"too few checkpoints with a KL estimate and a gold reward to judge ({len(ckpts)})"
    k = tests["pairs_z"]
    family = f"Holm-corrected over {k} pair{'s' if k != 1 else ''} tested, {tests['alpha']:.0%} per run"
    if drop is not None:
        g0, g1 = _fmt_pair(drop["gold_from"], drop["gold_to"], signed=True, least=3)
        p0, p1 = _fmt_pair(drop["proxy_from"], drop["proxy_to"], signed=True, least=3)
        k0, k1 = _fmt_pair(drop["from_kl"], drop["to_kl"])
        where = f"between the SFT model (KL 0) and KL {k1}" if drop["from_sft"] else f"between KL {k0} and {k1}"
        note = (f"gold reward fell from {g0} to {g1} {where} while the reward model's score rose "
                f"from {p0} to {p1}: over-optimisation")
        if drop["test"] == "z":
            sd = f"{drop['z']:.1f} standard errors of {drop['stderr']:.3f}" if drop["z"] is not None else "no noise"
            note += f" (a fall of {drop['drop']:.3f}, {sd}; adjusted p = {drop['p_holm']:.2g}, {family})"
        else:
            note += f" (no standard errors: judged against the fixed tolerance {drop['threshold']:g})"
        return note
    golds = [p for p in pts if p["gold"] is not None]
    first, last = golds[0], golds[-1]
    g0, g1 = _fmt_pair(first["gold"], last["gold"], signed=True, least=3)
    k0, k1 = _fmt_pair(first["kl"], last["kl"])
    start = f"{g0} (SFT model)" if first["sft"] else f"{g0} at KL {k0}"
    note = f"no over-optimisation seen: gold reward went from {start} to {g1} at KL {k1}"
    if first["proxy"] is not None and last["proxy"] is not None:
        p0, p1 = _fmt_pair(first["proxy"], last["proxy"], signed=True, least=3)
        note += f", the reward model's score from {p0} to {p1}"
    if k:
        note += f"; no fall beyond noise ({family})"
    if peak is not None:
        note += f"; {peak['text']}"
    return note


def overoptimisation(runs: list[dict], sft: dict | None = None, tol: float = 0.01,
                     alpha: float = OVEROPT_ALPHA) -> dict:
    """Reward over-optimisation per run: gold reward against sqrt(KL), after Gao et al. (2022).

    Args:
        runs: ``[{"run": str, "method": str, "points": [{"step", "kl", "gold", "proxy"}, ...]}]``.
            ``gold`` is the mean gold reward on the test prompts, ``proxy`` the mean score of
            the same completions by the reward model the run optimised, ``kl`` the KL to the
            SFT model in nats; a point should add ``gold_stderr`` (the standard error of
            ``gold`` over prompts). Points with ``kl`` None are skipped, a negative KL
            estimate is read as 0, and a missing gold or proxy value only drops that point
            from what needs it.
        sft: ``{"gold", "proxy", "gold_stderr"}`` of the SFT model (KL 0). It is the zero of
            the gains and the first checkpoint of every run, with its own standard error;
            without it gains are measured from 0 and each run starts at its first checkpoint.
        tol: the gold drop that counts as a fall for a pair of checkpoints neither of which
            has ``gold_stderr`` (no measure of noise; see ``_drop_tests``).
        alpha: the per-run false-alarm rate of the drop test (Holm over the pairs tested).

    Per run, with ``d = sqrt(KL)``, the gold gain over SFT is fitted as
    ``d * (alpha - beta * log d)`` (``gold_fit``, None with fewer than two checkpoints at
    d > 0), and the proxy the same way for reference (``proxy_fit``). When beta > 0 the gold
    fit peaks at ``d* = exp(alpha / beta - 1)``: ``peak_sqrt_kl``, ``peak_kl = d*^2`` and
    ``peak_gold`` (the fitted gold there), reported only within ``PEAK_REACH`` times the
    largest KL fitted; ``peak`` says which (``"within_data"``, ``"beyond_data"``,
    ``"beyond_reach"``: no peak within reach, ``"no_peak"``, or None without a fit) and
    ``peak_beyond_data`` whether a reported peak is an extrapolation. A run is
    ``overoptimised`` when, between two checkpoints in KL order, the gold reward falls
    beyond its noise while the proxy rises (``_drop_tests``: Holm-corrected one-sided
    z-tests, so a run whose gold never truly falls is flagged with probability at most
    ``alpha``); ``drop`` describes the largest such fall, ``tests`` how many pairs were
    tested, and ``note`` says it in words.

    Returns:
        ``{"runs": [{"run", "method", "checkpoints", "max_kl", "gold_fit", "proxy_fit",
        "peak", "peak_sqrt_kl", "peak_kl", "peak_gold", "peak_beyond_data", "overoptimised",
        "drop", "tests", "note"}, ...], "any_overoptimised": bool, "alpha": float, "peak_reach": float,
        "text": str}``.
    """
    gold_ref = _num(sft.get("gold")) if sft else None
    proxy_ref = _num(sft.get("proxy")) if sft else None
    gold_base = gold_ref if gold_ref is not None else 0.0
    proxy_base = proxy_ref if proxy_ref is not None else 0.0
    out = []
    for run in runs:
        pts = _checkpoints(run, sft)
        ckpts = [p for p in pts if not p["sft"]]
        d = [math.sqrt(p["kl"]) for p in ckpts]
        gold_fit = fit_gao(d, [None if p["gold"] is None else p["gold"] - gold_base for p in ckpts])
        proxy_fit = fit_gao(d, [None if p["proxy"] is None else p["proxy"] - proxy_base for p in ckpts])
        peak = gold_fit["peak"] if gold_fit else None
        d_star = peak["peak_sqrt_kl"] if peak else None
        max_kl = max((p["kl"] for p in ckpts), default=None)
        flagged, tests = _drop_tests(pts, tol, alpha)
        drop = flagged[0] if flagged else None
        # At d*, d (alpha - beta log d) = beta d*.
        peak_gold = None if d_star is None else _num(gold_base + gold_fit["beta"] * d_star)
        out.append({
            "run": run.get("run"), "method": run.get("method"), "checkpoints": len(ckpts), "max_kl": max_kl,
            "gold_fit": gold_fit, "proxy_fit": proxy_fit, "peak": peak["status"] if peak else None,
            "peak_sqrt_kl": _num(d_star), "peak_kl": _num(peak["peak_kl"]) if peak else None,
            "peak_gold": peak_gold,
            "peak_beyond_data": None if d_star is None or max_kl is None else bool(peak["peak_kl"] > max_kl),
            "overoptimised": drop is not None, "drop": drop, "tests": tests,
            "note": _overopt_note(pts, drop, peak, tests),
        })
    flagged_runs = [r["run"] for r in out if r["overoptimised"]]
    rule = (f"a run is flagged when its gold reward falls, between two checkpoints where the reward model's "
            f"score rose, by more than its noise: one-sided z-tests on the standard errors of both "
            f"checkpoints (the SFT model's included), Holm-corrected over the pairs tested, so a run whose gold "
            f"reward never truly falls is flagged at most {alpha:.0%} of the time")
    if not out:
        text = "No run had checkpoints to check for reward over-optimisation."
    elif flagged_runs:
        text = (f"Reward over-optimisation in {len(flagged_runs)} of {len(out)} runs ({', '.join(map(str, flagged_runs))}): "
                f"the gold reward fell while the reward model's score kept rising ({rule}).")
    else:
        text = (f"No reward over-optimisation in {len(out)} run{'s' if len(out) != 1 else ''}: "
                f"the gold reward never fell beyond noise while the reward model's score rose ({rule}).")
    return {"runs": out, "any_overoptimised": bool(flagged_runs), "alpha": alpha, "peak_reach": PEAK_REACH,
            "text": text}


# ---------------------------------------------------------------------------------------------
# 2. Best-of-n
# ---------------------------------------------------------------------------------------------


def best_of_n_kl(n: int) -> float:
    """The analytic KL (nats) of the best-of-n policy to the base policy, ``log n - (n - 1) / n``
    (Stiennon et al. 2020): exact only when the reward has no ties (no two outputs with the
    same score, no output drawn twice), an upper bound otherwise (Beirami et al. 2024). 0 for
    n = 1. :func:`best_of_n_kl_ties` estimates the KL from the samples themselves."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"best-of-n needs a whole n >= 1, got {n!r}")
    n = int(n)
    return math.log(n) - (n - 1) / n


def _levels(scores) -> list[tuple[float, float, int]]:
    """The distinct values of ``scores`` in increasing order as ``(a, b, count)``: the share of
    samples strictly below the value and at or below it."""
    v = sorted(float(x) for x in scores)
    m = len(v)
    out, i = [], 0
    while i < m:
        j = i
        while j < m and v[j] == v[i]:
            j += 1
        out.append((i / m, j / m, j - i))
        i = j
    return out


def _atom_kl(a: float, b: float, n: int) -> float:
    """KL contribution of an atom holding the CDF range [a, b]: best-of-n picks it with
    probability b^n - a^n, the base policy with probability b - a."""
    q = b ** n - a ** n
    return q * math.log(q / (b - a)) if q > 0 else 0.0


def _continuous_kl(a: float, b: float, n: int) -> float:
    """KL contribution of a tie-free stretch of the CDF from a to b: the integral of
    n u^(n-1) log(n u^(n-1)) du, in closed form; over [0, 1] it is log n - (n - 1) / n."""
    def t(u):
        return 0.0 if u <= 0 else u ** n * (math.log(n) + (n - 1) * math.log(u))
    return t(b) - t(a) - (n - 1) / n * (b ** n - a ** n)


def best_of_n_kl_ties(scores, n: int) -> float:
    """The KL of best-of-n to the base policy for one prompt, from ``scores``: the reward
    model's scores of m samples of that prompt (identical completions already given the same
    score). Ties are broken uniformly at random.

    Why it is right: with ties broken uniformly, best-of-n reweights whole reward levels and
    keeps the base policy's proportions within a level, so its KL is the KL between the
    distributions of the selected level and of one draw's level. Put through the base
    CDF u = F(score), a stretch without ties is continuous, where best-of-n has density
    n u^(n-1) against 1, and a tied value is an atom holding [a, b], which best-of-n picks
    with probability b^n - a^n against b - a. The estimate reads the tie structure off the
    samples: a score seen once is part of a continuous stretch, a score seen c >= 2 times
    (a duplicated completion, or distinct ones scored alike) an atom of mass c / m.

    So: no ties gives ``log n - (n - 1) / n`` exactly (the continuous case, where the
    formula is exact), all samples identical gives 0, and ties in between give less than
    the formula. Where it errs: an atom of the true distribution seen only once in m draws
    counts as continuous, so with many small atoms the estimate sits between the truth and
    the formula; the plug-in ``kl_empirical`` (every distinct value an atom) errs low
    instead. On simulated distributions (continuous; 2, 3, 8, 50, 200 equal atoms; uneven
    atoms; a 50% atom and a continuous rest) with m = 16 and n <= 16, its mean over prompts
    was within 7% of the true KL and at least as close as the plug-in in every case, where
    the formula overstated the KL by up to 2.6 times.
    """
    s = [float(x) for x in scores]
    if not s:
        raise ValueError("best-of-n KL: no scores")
    n = int(n)
    if n <= 1:
        return 0.0
    total = 0.0
    for a, b, c in _levels(s):
        total += _continuous_kl(a, b, n) if c == 1 else _atom_kl(a, b, n)
    return max(total, 0.0)


def best_of_n_kl_empirical(scores, n: int) -> float:
    """The plug-in KL of best-of-n for one prompt: the exact KL if the base policy were the
    m samples themselves (each distinct score an atom of its empirical mass, ties broken
    uniformly). Below the formula even without ties (1.794 against 1.835 at m = n = 16),
    reaching it as m grows; all samples identical gives 0."""
    s = [float(x) for x in scores]
    if not s:
        raise ValueError("best-of-n KL: no scores")
    n = int(n)
    return max(sum(_atom_kl(a, b, n) for a, b, _ in _levels(s)), 0.0) if n > 1 else 0.0


def best_of_n_weights(scores, n: int) -> list[float]:
    """Weights of m samples (in the given order) in the rank-weighted estimate of a
    best-of-n quantity: the probability that each is the one kept when n of the m are drawn
    without replacement and the highest-scored is kept, ties broken uniformly.

    Sorted by score, the i-th smallest of m untied samples is kept with probability
    C(i - 1, n - 1) / C(m, n); a tied group at ranks a + 1 .. b shares C(b, n) - C(a, n)
    equally. So ``sum(w * gold)`` is the average over every n-subset of the m samples of the
    gold reward best-of-n keeps: the U-statistic, unbiased for best-of-n's expected gold
    reward (the m samples being i.i.d. from the base policy) and, being the average over all
    subsets, of no larger variance than any single subset such as the first n.
    """
    s = [float(x) for x in scores]
    m, n = len(s), int(n)
    if n < 1 or n > m:
        raise ValueError(f"best-of-{n} from {m} samples: n must lie in 1..{m}")
    total = math.comb(m, n)
    order = sorted(range(m), key=lambda i: s[i])
    w = [0.0] * m
    i = 0
    while i < m:
        j = i
        while j < m and s[order[j]] == s[order[i]]:
            j += 1
        share = (math.comb(j, n) - math.comb(i, n)) / total / (j - i)
        for k in range(i, j):
            w[order[k]] = share
        i = j
    return w


def _merge_duplicates(proxy: list, gold: list, texts: list | None) -> tuple[list, list]:
    """Identical completions are one output: give each copy the mean score of the copies
    (a reward model can score the same text a hair differently in different batches)."""
    if texts is None:
        return proxy, gold
    groups = defaultdict(list)
    for i, t in enumerate(texts):
        groups[t if isinstance(t, str) else repr(t)].append(i)
    proxy, gold = list(proxy), list(gold)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        ps = [proxy[i] for i in idx if proxy[i] is not None]
        gs = [gold[i] for i in idx if gold[i] is not None]
        for i in idx:
            proxy[i] = float(np.mean(ps)) if ps else None
            gold[i] = float(np.mean(gs)) if gs else None
    return proxy, gold


def best_of_n(gold: list[list], proxy: list[list], ns=DEFAULT_NS, completions: list[list] | None = None) -> dict:
    """The best-of-n baseline: per prompt, of n of the SFT model's samples keep the one the
    reward model scores highest, and measure it with the gold reward.

    Args:
        gold: per test prompt, the gold rewards of its m samples (None = failed).
        proxy: the reward model's scores of the same samples, in the same order.
        ns: the n to report; those above m are left out (``text`` says so).
        completions: optional, the same samples' texts; identical completions of a prompt
            are one output (their scores averaged), so a duplicate is a tie, never two
            near-equal outputs.

    Gold reward: the rank-weighted estimator over all m samples (``best_of_n_weights``),
    the average over every n-subset of what best-of-n keeps, unbiased and of lower variance
    than using the first n samples. A sample with a None proxy score failed and is left out
    of its prompt's pool; a prompt whose pool holds fewer than n samples is skipped for that
    n. A kept sample whose gold reward is None is left out of the weighted mean (its weight
    goes to the others); ``gold_missing`` counts the prompts where that happened, and a
    prompt whose every candidate lacks gold has gold None.

    KL: per prompt ``best_of_n_kl_ties`` on the pool's scores (ties and duplicates lower it),
    averaged over the prompts used: ``kl``, with ``kl_stderr`` over prompts. The formula
    ``log n - (n - 1) / n`` is ``kl_upper_bound``, and ``kl_empirical`` the plug-in estimate.

    Returns:
        ``{"ns": [...], "n_max": int, "kl_method": str, "gold_method": str, "points": [{"n",
        "kl", "kl_stderr", "kl_upper_bound", "kl_empirical", "gold", "gold_stderr",
        "gold_per_prompt", "proxy", "prompts", "gold_missing"}, ...], "text": str}`` where
        ``gold_stderr`` is over prompts and ``gold_per_prompt`` follows the prompt order
        (None where skipped), for a per-prompt comparison with other policies.

    Raises:
        ValueError: ragged input (prompts with different sample counts, or gold, proxy and
        completions not the same shape), no samples, or an n that is not a whole number >= 1.
    """
    if len(gold) != len(proxy) or (completions is not None and len(completions) != len(gold)):
        raise ValueError(f"best-of-n: {len(gold)} prompts of gold rewards but {len(proxy)} of proxy scores"
                         + ("" if completions is None else f" and {len(completions)} of completions"))
    if not gold:
        raise ValueError("best-of-n: no prompts")
    n_max = len(gold[0])
    for i, (g, p) in enumerate(zip(gold, proxy)):
        c = completions[i] if completions is not None else g
        if len(g) != n_max or len(p) != n_max or len(c) != n_max:
            raise ValueError(f"best-of-n: prompt {i} has {len(g)} gold and {len(p)} proxy scores"
                             + ("" if completions is None else f" and {len(c)} completions")
                             + f", the first prompt {n_max}; every prompt needs the same number of samples")
    if n_max < 1:
        raise ValueError("best-of-n: no samples per prompt")
    for n in ns:
        best_of_n_kl(n)  # raises on an n that is not a whole number >= 1
    asked = sorted({int(n) for n in ns})
    used = [n for n in asked if n <= n_max]
    dropped = [n for n in asked if n > n_max]
    pools = []
    for i, (g_row, p_row) in enumerate(zip(gold, proxy)):
        p_vals, g_vals = _merge_duplicates([_num(v) for v in p_row], [_num(v) for v in g_row],
                                           None if completions is None else list(completions[i]))
        keep = [j for j, v in enumerate(p_vals) if v is not None]
        pools.append(([p_vals[j] for j in keep], [g_vals[j] for j in keep]))
    points = []
    for n in used:
        per_prompt, proxies, kls, kls_emp, missing = [], [], [], [], 0
        for p_pool, g_pool in pools:
            if len(p_pool) < n:
                per_prompt.append(None)
                continue
            w = best_of_n_weights(p_pool, n)
            proxies.append(float(sum(wi * pi for wi, pi in zip(w, p_pool))))
            kls.append(best_of_n_kl_ties(p_pool, n))
            kls_emp.append(best_of_n_kl_empirical(p_pool, n))
            have = [(wi, gi) for wi, gi in zip(w, g_pool) if gi is not None]
            lost = any(gi is None and wi > 0 for wi, gi in zip(w, g_pool))
            missing += lost
            mass = sum(wi for wi, _ in have)
            per_prompt.append(float(sum(wi * gi for wi, gi in have) / mass) if mass > 0 else None)
        golds = [v for v in per_prompt if v is not None]
        stderr = float(np.std(golds, ddof=1) / math.sqrt(len(golds))) if len(golds) > 1 else None
        points.append({"n": n,
                       "kl": float(np.mean(kls)) if kls else None,
                       "kl_stderr": float(np.std(kls, ddof=1) / math.sqrt(len(kls))) if len(kls) > 1 else None,
                       "kl_upper_bound": best_of_n_kl(n),
                       "kl_empirical": float(np.mean(kls_emp)) if kls_emp else None,
                       "gold": float(np.mean(golds)) if golds else None, "gold_stderr": stderr,
                       "gold_per_prompt": per_prompt,
                       "proxy": float(np.mean(proxies)) if proxies else None,
                       "prompts": len(proxies), "gold_missing": missing})
    text = _bon_text(points, len(gold), n_max, dropped)
    return {"ns": used, "n_max": n_max, "kl_method": BON_KL_METHOD, "gold_method": BON_GOLD_METHOD,
            "points": points, "text": text}


BON_KL_METHOD = ("estimated per prompt from the reward model's scores of the samples, counting tied scores and "
                 "duplicate completions (which lower it), averaged over prompts; log n - (n-1)/n is its upper bound, "
                 "reached only without ties")
BON_GOLD_METHOD = ("rank-weighted over all samples of each prompt: the average, over every n of them, of the gold "
                   "reward of the one the reward model prefers (unbiased, lower variance than the first n alone)")


def _bon_text(points: list[dict], prompts: int, n_max: int, dropped: list[int]) -> str:
    valid = [p for p in points if p["gold"] is not None]

    def kl(p):
        return f"KL {p['kl']:.2f}, upper bound {p['kl_upper_bound']:.2f}"

    if not valid:
        text = f"Best-of-n on {prompts} prompts: no sample had both a reward-model score and a gold reward."
    elif len(valid) == 1:
        p = valid[0]
        text = f"Best-of-{p['n']} on {p['prompts']} prompts: gold reward {p['gold']:+.3f} at {kl(p)}."
    else:
        a, b = valid[0], valid[-1]
        text = (f"Best-of-n on {prompts} prompts: gold reward {a['gold']:+.3f} at n = {a['n']} ({kl(a)}) "
                f"to {b['gold']:+.3f} at n = {b['n']} ({kl(b)}).")
    if dropped:
        text += (f" n = {', '.join(map(str, dropped))} left out: only {n_max} sample"
                 f"{'s' if n_max != 1 else ''} per prompt.")
    return text


def best_of_n_against(bon: dict | None, grid, curves: dict | None, seed_curves: dict | None = None,
                      names: dict | None = None, confidence: float = 0.95, skip=()) -> list[dict]:
    """Each method's frontier minus best-of-n's gold reward at best-of-n's KLs inside the
    compared range, with an interval when the per-seed curves are there.

    Args:
        bon: ``best_of_n(...)``; each point's ``kl`` places it (the ties-aware estimate).
        grid, curves: ``compare_frontiers``' KL grid and ``{method: mean curve on grid}``.
        seed_curves: ``{method: {seed: values on grid}}`` (``compare_frontiers``' per-seed
            frontiers), or None.
        names: display names of the methods. ``skip``: methods to leave out.

    With two or more seed curves, at each best-of-n KL the method's value is read off each
    seed's curve (linear interpolation on the grid); the difference is their mean minus
    best-of-n's gold, with a t interval whose standard error adds the seed-to-seed spread
    (variance over seeds / seeds) and best-of-n's own standard error over prompts in
    quadrature, with Welch-Satterthwaite degrees of freedom. Each interval holds at its own
    KL (not jointly over the n). Without seed curves the mean curve gives a difference with
    no interval, and the text says so.

    Returns ``[{"method", "name", "interval": bool, "seeds", "rows": [{"n", "kl",
    "difference", "ci", "df", "verdict"}], "outside": [n, ...], "text"}]``, one per method
    with a curve; ``verdict`` is ``"above"``, ``"below"`` or ``"not distinguishable"``
    (None without an interval).
    """
    from scipy import stats

    names = names or {}
    if not bon or not grid or not curves:
        return []
    lo_kl, hi_kl = grid[0], grid[-1]
    pts = [q for q in bon.get("points", []) if _num(q.get("gold")) is not None and _num(q.get("kl")) is not None]
    inside = [q for q in pts if lo_kl <= q["kl"] <= hi_kl]
    outside = [q["n"] for q in pts if not lo_kl <= q["kl"] <= hi_kl]
    pct = f"{confidence * 100:g}%"
    out = []
    for method, curve in curves.items():
        if method in skip or not curve or len(curve) != len(grid):
            continue
        name = names.get(method, method)
        seeds = [list(c) for c in ((seed_curves or {}).get(method) or {}).values()
                 if c is not None and len(c) == len(grid) and all(_num(v) is not None for v in c)]
        interval = len(seeds) >= 2
        rows = []
        for q in inside:
            gold, se_b = float(q["gold"]), _num(q.get("gold_stderr")) or 0.0
            row = {"n": q["n"], "kl": float(q["kl"]), "difference": None, "ci": None, "df": None, "verdict": None}
            if interval:
                vals = np.array([np.interp(q["kl"], grid, c) for c in seeds])
                s = len(vals)
                v_seed = float(np.var(vals, ddof=1)) / s
                v_bon = se_b ** 2
                diff = float(vals.mean()) - gold
                se = math.sqrt(v_seed + v_bon)
                p_b = max(int(q.get("prompts") or 0), 2)
                denom = (v_seed ** 2 / (s - 1) if v_seed > 0 else 0.0) + (v_bon ** 2 / (p_b - 1) if v_bon > 0 else 0.0)
                df = (v_seed + v_bon) ** 2 / denom if denom > 0 else float(s - 1)
                half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
                row.update(difference=diff, ci=[diff - half, diff + half], df=df,
                           verdict="above" if diff - half > 0 else "below" if diff + half < 0 else "not distinguishable")
            else:
                row["difference"] = float(np.interp(q["kl"], grid, curve)) - gold
            rows.append(row)
        head = f"{name} minus best-of-n at best-of-n's KLs inside the compared range (KL {lo_kl:.2f} to {hi_kl:.2f})"
        if not rows:
            text = f"{head}: none of best-of-n's points lies inside it, so there is nothing to compare."
        elif interval:
            parts = "; ".join(f"n={r['n']} (KL {r['kl']:.2f}): {r['difference']:+.3f} ({pct} CI {r['ci'][0]:+.3f} to "
                              f"{r['ci'][1]:+.3f})" for r in rows)
            groups = []
            for word in ("above", "below", "not distinguishable"):
                ns = [str(r["n"]) for r in rows if r["verdict"] == word]
                if ns:
                    label = "not distinguishable from best-of-n" if word == "not distinguishable" else f"{word} best-of-n"
                    groups.append(f"{label} at n = {', '.join(ns)}")
            text = (f"{head}: {parts}. {_sentence_case('; '.join(groups))} (t over {len(seeds)} seeds with best-of-n's "
                    f"standard error over prompts added; each interval holds at its own KL, not jointly).")
        else:
            parts = "; ".join(f"n={r['n']} (KL {r['kl']:.2f}): {r['difference']:+.3f}" for r in rows)
            why = ("one seed" if len(seeds) == 1 else "the comparison carries no per-seed curves")
            text = f"{head}: {parts}. Mean curve only, no interval ({why}), so no conclusion is drawn."
        if outside and rows:
            text += f" n = {', '.join(map(str, outside))} lie outside the compared KL range."
        out.append({"method": method, "name": name, "interval": interval, "seeds": len(seeds), "rows": rows,
                    "outside": outside, "text": text})
    return out


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# 4. Preference-data quality
# ---------------------------------------------------------------------------------------------


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


def _text(x) -> str:
    """A prompt or completion as text: conversational entries (lists of messages) are their
    messages' contents joined."""
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    if isinstance(x, (list, tuple)):
        return "\n".join(m.get("content", "") if isinstance(m, dict) else str(m) for m in x)
    if isinstance(x, dict):
        return str(x.get("content", x))
    return str(x)


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def _histogram(values, bins: int | None = None, integer: bool = False) -> dict:
    """Bin edges and counts; unit-wide bins centred on the integers when the values are
    whole numbers over a small range (word counts), else about sqrt(n) bins, 5 to 30."""
    v = np.asarray(values, dtype=float)
    if integer and v.size and v.max() - v.min() <= 40:
        edges = np.arange(v.min() - 0.5, v.max() + 1.5)
    else:
        bins = bins or int(min(30, max(5, round(math.sqrt(max(v.size, 1))))))
        edges = np.histogram_bin_edges(v, bins=bins)
    counts, edges = np.histogram(v, bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _listed(rows: list[int]) -> list[int]:
    return sorted(rows)[:MAX_LISTED_ROWS]


def _rm_gold_agreement(heldout: dict) -> dict:
    keys = ("rm_chosen", "rm_rejected", "gold_chosen", "gold_rejected")
    missing_keys = [k for k in keys if k not in heldout]
    if missing_keys:
        raise ValueError(f"preference_quality: heldout lacks {', '.join(missing_keys)}")
    cols = [list(heldout[k]) for k in keys]
    if len({len(c) for c in cols}) != 1:
        raise ValueError("preference_quality: heldout lists differ in length: "
                         + ", ".join(f"{k} {len(c)}" for k, c in zip(keys, cols)))
    agree = n = ties = missing = 0
    for rc, rr, gc, gr in zip(*cols):
        vals = [_num(v) for v in (rc, rr, gc, gr)]
        if any(v is None for v in vals):
            missing += 1
            continue
        gold_diff = vals[2] - vals[3]
        if gold_diff == 0:
            ties += 1  # no right answer for the reward model to agree with
            continue
        n += 1
        # A reward model tie agrees with neither side, so it counts against agreement.
        rm_diff = vals[0] - vals[1]
        agree += int(rm_diff != 0 and (rm_diff > 0) == (gold_diff > 0))
    return {"agreement": agree / n if n else None, "ci": wilson_interval(agree, n), "agree": agree,
            "pairs": n, "gold_ties": ties, "missing": missing}


def preference_quality(rows: list[dict], heldout: dict | None = None, length_unit: str = "words",
                       length_bias_threshold: float = 0.6) -> dict:
    """The quality of the preference pairs a run trained on.

    Args:
        rows: the pairs, dicts with ``prompt``, ``chosen``, ``rejected`` and optionally the
            gold scores ``chosen_reward`` and ``rejected_reward``. Conversational entries
            (lists of messages) are read as their contents joined.
        heldout: optional ``{"rm_chosen", "rm_rejected", "gold_chosen", "gold_rejected"}``,
            lists of the reward model's and the gold reward's scores of the same held-out
            pairs, for ``rm_gold_agreement``.
        length_unit: ``"words"`` (whitespace-separated) or ``"characters"``: the unit of the
            length shares and of the length-difference histogram.
        length_bias_threshold: ``chosen_longer_share`` above this warns of a length bias.

    Returns a dict with:
        ``pairs``; ``length_unit``; ``chosen_longer_share``, ``rejected_longer_share``,
        ``equal_length_share`` (shares of all pairs, None without pairs);
        ``mean_length_difference``: ``{"words", "characters"}``, chosen minus rejected;
        ``length_difference_histogram``: ``{"unit", "edges", "counts"}``;
        ``duplicate_prompts``: ``{"prompts", "rows_involved", "rows"}``, prompts (whitespace
        normalised) found in more than one pair, and those pairs' row indices;
        ``identical_pairs``: ``{"count", "rows"}``, chosen equal to rejected after whitespace
        normalisation; ``gold_margin``: over pairs with both gold scores, ``{"pairs", "mean",
        "std", "quantiles": {"0.05": ..., "0.95": ...}, "non_positive", "non_positive_share",
        "histogram": {"edges", "counts"}}``, or None; ``rm_gold_agreement``: ``{"agreement",
        "ci", "agree", "pairs", "gold_ties", "missing"}`` (agreement among held-out pairs with
        a non-zero gold difference, a reward-model tie counting as disagreement; ``ci`` the
        Wilson 95% interval), or None without ``heldout``; ``warnings``: plain sentences.
        Row lists hold at most ``MAX_LISTED_ROWS`` indices; the counts are complete.
    """
    units = {"words": "words", "word": "words", "characters": "characters", "chars": "characters",
             "character": "characters"}
    if length_unit not in units:
        raise ValueError(f"preference_quality: length_unit must be 'words' or 'characters', got {length_unit!r}")
    unit = units[length_unit]
    n = len(rows)
    diff_words, diff_chars, by_prompt, identical = [], [], defaultdict(list), []
    margins = []
    for i, r in enumerate(rows):
        chosen, rejected = _text(r.get("chosen")), _text(r.get("rejected"))
        diff_words.append(len(chosen.split()) - len(rejected.split()))
        diff_chars.append(len(chosen) - len(rejected))
        by_prompt[_norm(_text(r.get("prompt")))].append(i)
        if _norm(chosen) == _norm(rejected):
            identical.append(i)
        c, rj = _num(r.get("chosen_reward")), _num(r.get("rejected_reward"))
        if c is not None and rj is not None:
            margins.append(c - rj)
    diffs = diff_words if unit == "words" else diff_chars
    share = (lambda k: k / n) if n else (lambda k: None)
    longer = share(sum(d > 0 for d in diffs))
    dup_rows = [i for idx in by_prompt.values() if len(idx) > 1 for i in idx]
    dup_prompts = sum(len(idx) > 1 for idx in by_prompt.values())
    result = {
        "pairs": n,
        "length_unit": unit,
        "chosen_longer_share": longer,
        "rejected_longer_share": share(sum(d < 0 for d in diffs)),
        "equal_length_share": share(sum(d == 0 for d in diffs)),
        "mean_length_difference": {"words": float(np.mean(diff_words)) if n else None,
                                   "characters": float(np.mean(diff_chars)) if n else None},
        "length_difference_histogram": {"unit": unit, **_histogram(diffs, integer=True)} if n else None,
        "duplicate_prompts": {"prompts": dup_prompts, "rows_involved": len(dup_rows), "rows": _listed(dup_rows)},
        "identical_pairs": {"count": len(identical), "rows": _listed(identical)},
        "gold_margin": _gold_margin(margins) if margins else None,
        "rm_gold_agreement": _rm_gold_agreement(heldout) if heldout is not None else None,
    }
    result["warnings"] = _quality_warnings(result, length_bias_threshold)
    return result


def _gold_margin(margins: list[float]) -> dict:
    m = np.asarray(margins, dtype=float)
    non_positive = int(np.sum(m <= 0))
    return {"pairs": int(m.size), "mean": float(m.mean()), "std": float(m.std(ddof=1)) if m.size > 1 else None,
            "quantiles": {f"{q:g}": float(np.quantile(m, q)) for q in GOLD_MARGIN_QUANTILES},
            "non_positive": non_positive, "non_positive_share": non_positive / m.size,
            "histogram": _histogram(m)}


def _quality_warnings(r: dict, threshold: float) -> list[str]:
    warnings = []
    n = r["pairs"]
    if not n:
        return ["there are no pairs"]
    if r["chosen_longer_share"] > threshold:
        warnings.append(f"chosen is longer than rejected in {r['chosen_longer_share']:.0%} of pairs: "
                        f"a length bias that DPO learns")
    ident = r["identical_pairs"]["count"]
    if ident:
        warnings.append(f"{ident} pair{'s have' if ident != 1 else ' has'} chosen identical to rejected "
                        f"(after whitespace normalisation): they teach nothing and DPO's loss ignores them")
    dup = r["duplicate_prompts"]
    if dup["prompts"]:
        warnings.append(f"{dup['prompts']} prompt{'s appear' if dup['prompts'] != 1 else ' appears'} in more than "
                        f"one pair ({dup['rows_involved']} pairs): they weigh more in training, and a held-out split "
                        f"by row can share prompts with training")
    gm = r["gold_margin"]
    if gm and gm["non_positive"]:
        warnings.append(f"{gm['non_positive_share']:.0%} of the pairs with gold scores ({gm['non_positive']} of "
                        f"{gm['pairs']}) have a gold margin <= 0: mislabelled or tied by the gold reward")
    ag = r["rm_gold_agreement"]
    if ag and ag["ci"] is not None and ag["ci"][0] <= 0.5:
        warnings.append(f"the reward model agrees with the gold reward on only {ag['agreement']:.0%} of "
                        f"{ag['pairs']} held-out pairs (95% CI {ag['ci'][0]:.0%} to {ag['ci'][1]:.0%}): "
                        f"not clearly better than chance")
    return warnings
