"""Diagnostics behind four report sections, as pure functions over numbers the caller has.

- ``overoptimisation``: does a run's gold reward fall while the reward model's score keeps
  rising (reward over-optimisation), with the Gao et al. (2022) fit of gold against sqrt(KL).
- ``best_of_n``: the best-of-n baseline on the SFT model's samples, at its analytic KL.
- ``power_curve``: how many seeds per method a difference of a given size needs.
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


def gao_curve(d, alpha: float, beta: float):
    """The gain over the reference at ``d = sqrt(KL)`` under the Gao et al. (2022) form for
    best-of-n and RL, ``d * (alpha - beta * log d)``; 0 at d = 0 (its limit)."""
    d = np.asarray(d, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = d * (alpha - beta * np.log(d))
    return np.where(d > 0, out, 0.0)


def fit_gao(d, gain) -> dict | None:
    """Least-squares fit of ``gain = d * (alpha - beta * log d)``, linear in (alpha, beta)
    with the features ``d`` and ``-d log d``.

    Points with ``d <= 0`` carry no information (the form is 0 there) and are dropped. Returns
    ``{"alpha", "beta", "rmse", "points"}``, or None with fewer than two points at ``d > 0`` or
    when the features are collinear (all checkpoints at the same KL).
    """
    pairs = [(float(x), float(y)) for x, y in zip(d, gain) if x is not None and y is not None and x > 0]
    if len(pairs) < 2:
        return None
    xs = np.array([p[0] for p in pairs])
    ys = np.array([p[1] for p in pairs])
    design = np.column_stack([xs, -xs * np.log(xs)])
    coef, _, rank, _ = np.linalg.lstsq(design, ys, rcond=None)
    if rank < 2:
        return None
    resid = ys - design @ coef
    alpha, beta = float(coef[0]), float(coef[1])
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        return None
    return {"alpha": alpha, "beta": beta, "rmse": float(math.sqrt(float(np.mean(resid ** 2)))), "points": len(pairs)}


def _gao_peak(fit: dict | None) -> float | None:
    """sqrt(KL) where the fitted gain peaks: exp(alpha / beta - 1), only when beta > 0 (with
    beta <= 0 the fitted curve never turns down)."""
    if not fit or fit["beta"] <= 0:
        return None
    try:
        d_star = math.exp(fit["alpha"] / fit["beta"] - 1.0)
    except OverflowError:
        return None
    return d_star if math.isfinite(d_star) and d_star > 0 else None


def _checkpoints(run: dict, sft: dict | None) -> list[dict]:
    """A run's checkpoints with a KL estimate, in KL order (ties by step), preceded by the SFT
    model at KL 0 when it is given. A negative Monte-Carlo KL estimate is read as 0."""
    pts = []
    for p in run.get("points") or []:
        kl = _num(p.get("kl"))
        if kl is None:
            continue
        pts.append({"step": p.get("step"), "kl": max(kl, 0.0), "gold": _num(p.get("gold")),
                    "proxy": _num(p.get("proxy")), "gold_stderr": _num(p.get("gold_stderr")), "sft": False})
    pts.sort(key=lambda p: (p["kl"], p["step"] if isinstance(p["step"], (int, float)) else 0))
    if sft is not None:
        pts.insert(0, {"step": 0, "kl": 0.0, "gold": _num(sft.get("gold")), "proxy": _num(sft.get("proxy")),
                       "gold_stderr": _num(sft.get("gold_stderr")), "sft": True})
    return pts


def _largest_drop(pts: list[dict], tol: float, z: float) -> dict | None:
    """Among checkpoint pairs (earlier, later) in KL order where the proxy rose, the one whose
    gold reward fell the most, if that fall exceeds the threshold: ``z`` times the standard
    error of the difference when both checkpoints carry ``gold_stderr``, else ``tol``.

    Any earlier checkpoint counts, not only the neighbour, so a slow decline over many
    checkpoints (each step within noise) is still caught.
    """
    best = None
    for i, a in enumerate(pts):
        if a["gold"] is None or a["proxy"] is None:
            continue
        for b in pts[i + 1:]:
            if b["gold"] is None or b["proxy"] is None or not b["proxy"] > a["proxy"]:
                continue
            drop = a["gold"] - b["gold"]
            if a["gold_stderr"] is not None and b["gold_stderr"] is not None:
                # Conservative: the checkpoints share prompts, so the paired error is smaller.
                threshold = z * math.sqrt(a["gold_stderr"] ** 2 + b["gold_stderr"] ** 2)
            else:
                threshold = tol
            if drop > threshold and (best is None or drop > best["drop"]):
                best = {"from_kl": a["kl"], "to_kl": b["kl"], "from_step": a["step"], "to_step": b["step"],
                        "from_sft": a["sft"], "gold_from": a["gold"], "gold_to": b["gold"],
                        "proxy_from": a["proxy"], "proxy_to": b["proxy"], "drop": drop, "threshold": threshold}
    return best


def _overopt_note(pts: list[dict], drop: dict | None, peak_kl: float | None) -> str:
    ckpts = [p for p in pts if not p["sft"]]
    if len(ckpts) < 1 or len([p for p in pts if p["gold"] is not None]) < 2:
        return f"too few checkpoints with a KL estimate and a gold reward to judge ({len(ckpts)})"
    if drop is not None:
        g0, g1 = _fmt_pair(drop["gold_from"], drop["gold_to"], signed=True, least=3)
        p0, p1 = _fmt_pair(drop["proxy_from"], drop["proxy_to"], signed=True, least=3)
        k0, k1 = _fmt_pair(drop["from_kl"], drop["to_kl"])
        where = f"between the SFT model (KL 0) and KL {k1}" if drop["from_sft"] else f"between KL {k0} and {k1}"
        return (f"gold reward fell from {g0} to {g1} {where} while the reward model's score rose "
                f"from {p0} to {p1}: over-optimisation")
    golds = [p for p in pts if p["gold"] is not None]
    first, last = golds[0], golds[-1]
    g0, g1 = _fmt_pair(first["gold"], last["gold"], signed=True, least=3)
    k0, k1 = _fmt_pair(first["kl"], last["kl"])
    start = f"{g0} (SFT model)" if first["sft"] else f"{g0} at KL {k0}"
    note = f"no over-optimisation seen: gold reward went from {start} to {g1} at KL {k1}"
    if first["proxy"] is not None and last["proxy"] is not None:
        p0, p1 = _fmt_pair(first["proxy"], last["proxy"], signed=True, least=3)
        note += f", the reward model's score from {p0} to {p1}"
    if peak_kl is not None:
        side = "beyond the last checkpoint" if peak_kl > last["kl"] else "within the checkpoints' range"
        note += f"; the fitted gold curve peaks at KL {peak_kl:.2f}, {side}"
    return note


def overoptimisation(runs: list[dict], sft: dict | None = None, tol: float = 0.01, z: float = Z95) -> dict:
    """Reward over-optimisation per run: gold reward against sqrt(KL), after Gao et al. (2022).

    Args:
        runs: ``[{"run": str, "method": str, "points": [{"step", "kl", "gold", "proxy"}, ...]}]``.
            ``gold`` is the mean gold reward on the test prompts, ``proxy`` the mean score of
            the same completions by the reward model the run optimised, ``kl`` the KL to the
            SFT model in nats; a point may add ``gold_stderr``. Points with ``kl`` None are
            skipped, a negative KL estimate is read as 0, and a missing gold or proxy value
            only drops that point from what needs it.
        sft: ``{"gold", "proxy"}`` of the SFT model (KL 0; optional ``gold_stderr``). It is the
            zero of the gains and the first checkpoint of every run; without it gains are
            measured from 0 and each run starts at its first checkpoint.
        tol: the gold drop that counts as a fall when the two checkpoints lack ``gold_stderr``.
        z: with ``gold_stderr`` on both checkpoints, a fall must exceed ``z`` standard errors
            of the difference instead.

    Per run, with ``d = sqrt(KL)``, the gold gain over SFT is fitted as
    ``d * (alpha - beta * log d)`` (``gold_fit``, None with fewer than two checkpoints at
    d > 0), and the proxy the same way for reference (``proxy_fit``). When beta > 0 the gold
    fit peaks at ``d* = exp(alpha / beta - 1)``: ``peak_sqrt_kl``, ``peak_kl = d*^2`` and
    ``peak_gold`` (the fitted gold there); ``peak_beyond_data`` says whether that is an
    extrapolation. A run is ``overoptimised`` when, between two checkpoints in KL order, the
    gold reward drops by more than the threshold while the proxy rises; ``drop`` describes
    the largest such fall and ``note`` says it in words.

    Returns:
        ``{"runs": [{"run", "method", "checkpoints", "max_kl", "gold_fit", "proxy_fit",
        "peak_sqrt_kl", "peak_kl", "peak_gold", "peak_beyond_data", "overoptimised", "drop",
        "note"}, ...], "any_overoptimised": bool, "text": str}``.
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
        d_star = _gao_peak(gold_fit)
        peak_kl = d_star ** 2 if d_star is not None else None
        max_kl = max((p["kl"] for p in ckpts), default=None)
        drop = _largest_drop(pts, tol, z)
        out.append({
            "run": run.get("run"), "method": run.get("method"), "checkpoints": len(ckpts), "max_kl": max_kl,
            "gold_fit": gold_fit, "proxy_fit": proxy_fit,
            "peak_sqrt_kl": d_star, "peak_kl": _num(peak_kl),
            "peak_gold": None if d_star is None else _num(gold_base + gold_fit["beta"] * d_star),
            "peak_beyond_data": None if peak_kl is None or max_kl is None else bool(peak_kl > max_kl),
            "overoptimised": drop is not None, "drop": drop, "note": _overopt_note(pts, drop, _num(peak_kl)),
        })
    flagged = [r["run"] for r in out if r["overoptimised"]]
    if not out:
        text = "No run had checkpoints to check for reward over-optimisation."
    elif flagged:
        text = (f"Reward over-optimisation in {len(flagged)} of {len(out)} runs ({', '.join(map(str, flagged))}): "
                f"the gold reward fell while the reward model's score kept rising.")
    else:
        text = (f"No reward over-optimisation in {len(out)} run{'s' if len(out) != 1 else ''}: "
                f"the gold reward never fell beyond noise while the reward model's score rose.")
    return {"runs": out, "any_overoptimised": bool(flagged), "text": text}


# ---------------------------------------------------------------------------------------------
# 2. Best-of-n
# ---------------------------------------------------------------------------------------------


def best_of_n_kl(n: int) -> float:
    """The analytic KL (nats) of the best-of-n policy to the base policy: log n - (n - 1) / n
    (Stiennon et al. 2020; Beirami et al. 2024 show it is an upper bound). 0 for n = 1."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"best-of-n needs a whole n >= 1, got {n!r}")
    n = int(n)
    return math.log(n) - (n - 1) / n


def best_of_n(gold: list[list], proxy: list[list], ns=DEFAULT_NS) -> dict:
    """The best-of-n baseline: per prompt, of the SFT model's first n samples keep the one the
    reward model scores highest, and measure it with the gold reward.

    Args:
        gold: per test prompt, the gold rewards of its n_max samples (None = failed).
        proxy: the reward model's scores of the same samples, in the same order.
        ns: the n to report; those above n_max are left out (``text`` says so).

    Using the first n samples of each prompt makes the selections nest (best-of-2 looks at
    best-of-1's sample and one more). A None proxy score is never picked; a prompt with no
    valid proxy score among its first n samples is skipped for that n. Ties in the proxy go
    to the earlier sample. A kept sample whose gold reward is None counts in ``prompts`` and
    ``proxy`` but not in ``gold`` (see ``gold_missing``).

    Returns:
        ``{"ns": [...], "n_max": int, "points": [{"n", "kl", "gold", "gold_stderr",
        "gold_per_prompt", "proxy", "prompts", "gold_missing"}, ...], "text": str}`` where
        ``kl`` is ``best_of_n_kl(n)`` and ``gold_per_prompt`` follows the prompt order (None
        where skipped), for a per-prompt comparison with other policies.

    Raises:
        ValueError: ragged input (prompts with different sample counts, or gold and proxy not
        the same shape), no samples, or an n that is not a whole number >= 1.
    """
    if len(gold) != len(proxy):
        raise ValueError(f"best-of-n: {len(gold)} prompts of gold rewards but {len(proxy)} of proxy scores")
    if not gold:
        raise ValueError("best-of-n: no prompts")
    n_max = len(gold[0])
    for i, (g, p) in enumerate(zip(gold, proxy)):
        if len(g) != n_max or len(p) != n_max:
            raise ValueError(f"best-of-n: prompt {i} has {len(g)} gold and {len(p)} proxy scores, "
                             f"the first prompt {n_max}; every prompt needs the same number of samples")
    if n_max < 1:
        raise ValueError("best-of-n: no samples per prompt")
    for n in ns:
        best_of_n_kl(n)  # raises on an n that is not a whole number >= 1
    asked = sorted({int(n) for n in ns})
    used = [n for n in asked if n <= n_max]
    dropped = [n for n in asked if n > n_max]
    gold_v = [[_num(v) for v in row] for row in gold]
    proxy_v = [[_num(v) for v in row] for row in proxy]
    points = []
    for n in used:
        per_prompt, proxies, missing = [], [], 0
        for g_row, p_row in zip(gold_v, proxy_v):
            best = None
            for j in range(n):
                if p_row[j] is not None and (best is None or p_row[j] > p_row[best]):
                    best = j
            if best is None:
                per_prompt.append(None)
                continue
            proxies.append(p_row[best])
            per_prompt.append(g_row[best])
            missing += g_row[best] is None
        golds = [v for v in per_prompt if v is not None]
        stderr = float(np.std(golds, ddof=1) / math.sqrt(len(golds))) if len(golds) > 1 else None
        points.append({"n": n, "kl": best_of_n_kl(n),
                       "gold": float(np.mean(golds)) if golds else None, "gold_stderr": stderr,
                       "gold_per_prompt": per_prompt,
                       "proxy": float(np.mean(proxies)) if proxies else None,
                       "prompts": len(proxies), "gold_missing": missing})
    text = _bon_text(points, len(gold), n_max, dropped)
    return {"ns": used, "n_max": n_max, "points": points, "text": text}


def _bon_text(points: list[dict], prompts: int, n_max: int, dropped: list[int]) -> str:
    valid = [p for p in points if p["gold"] is not None]
    if not valid:
        text = f"Best-of-n on {prompts} prompts: no sample had both a reward-model score and a gold reward."
    elif len(valid) == 1:
        p = valid[0]
        text = f"Best-of-{p['n']} on {p['prompts']} prompts: gold reward {p['gold']:+.3f} at KL {p['kl']:.2f}."
    else:
        a, b = valid[0], valid[-1]
        text = (f"Best-of-n on {prompts} prompts: gold reward {a['gold']:+.3f} at n = {a['n']} (KL {a['kl']:.2f}) "
                f"to {b['gold']:+.3f} at n = {b['n']} (KL {b['kl']:.2f}).")
    if dropped:
        text += (f" n = {', '.join(map(str, dropped))} left out: only {n_max} sample"
                 f"{'s' if n_max != 1 else ''} per prompt.")
    return text


# ---------------------------------------------------------------------------------------------
# 3. Power
# ---------------------------------------------------------------------------------------------


def power_curve(sd, difference, alpha: float = 0.05, seeds=range(2, 21)) -> list[dict]:
    """Power of a two-sided two-sample t-test to detect ``difference`` between two methods
    with n seeds each, against n.

    Equal n and equal standard deviation ``sd`` (the seed-to-seed spread of a method's
    score), so the Welch test reduces to Student's: df = 2n - 2, noncentrality
    ``|difference| / (sd * sqrt(2 / n))``, and the power is the mass of the noncentral t
    distribution beyond the two critical values at ``alpha``.

    Returns ``[{"seeds": n, "power": p}, ...]`` for each n >= 2 in ``seeds``; ``[]`` when
    ``sd`` or ``difference`` is None, not finite, or ``sd`` is not positive (a spread of 0
    means there is no noise to power against).
    """
    from scipy import stats

    sd, difference = _num(sd), _num(difference)
    if sd is None or difference is None or sd <= 0:
        return []
    if not 0 < alpha < 1:
        raise ValueError(f"power_curve: alpha must lie in (0, 1), got {alpha}")
    curve = []
    for n in sorted({int(n) for n in seeds}):
        if n < 2:
            continue  # a t-test needs two seeds per method for a spread
        df = 2 * n - 2
        nc = abs(difference) / (sd * math.sqrt(2.0 / n))
        crit = float(stats.t.ppf(1 - alpha / 2, df))
        power = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
        if not math.isfinite(power):  # scipy's noncentral t gives NaN far in its tails
            power = float(stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc))
        curve.append({"seeds": n, "power": min(max(power, 0.0), 1.0)})
    return curve


def seeds_for_power(curve: list[dict], target: float = 0.8) -> int | None:
    """The fewest seeds per method on ``curve`` whose power reaches ``target``, or None."""
    return next((c["seeds"] for c in curve if c["power"] >= target), None)


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
