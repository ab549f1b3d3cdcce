"""Reward over-optimisation: does a run's gold reward fall, beyond its noise, while the reward
model's score keeps rising; with the Gao et al. (2022) fit of gold against sqrt(KL)."""

from __future__ import annotations

import math

from ...eval.multiplicity import holm
from ...eval.stats import normal_isf, normal_sf
from .gao import PEAK_REACH, fit_gao
from .values import fmt_pair, num

OVEROPT_ALPHA = 0.05  # the chance, per run, that a run whose gold reward never falls is flagged


def _checkpoints(run: dict, sft: dict | None) -> list[dict]:
    """A run's checkpoints with a KL estimate, in KL order (ties by step), preceded by the SFT
    model at KL 0 when it is given. A negative Monte-Carlo KL estimate is read as 0."""
    pts = []
    for p in run.get("points") or []:
        kl = num(p.get("kl"))
        if kl is None:
            continue
        se = num(p.get("gold_stderr"))
        pts.append({"step": p.get("step"), "kl": max(kl, 0.0), "gold": num(p.get("gold")),
                    "proxy": num(p.get("proxy")), "gold_stderr": se if se is not None and se >= 0 else None,
                    "sft": False})
    pts.sort(key=lambda p: (p["kl"], p["step"] if isinstance(p["step"], (int, float)) else 0))
    if sft is not None:
        se = num(sft.get("gold_stderr"))
        pts.insert(0, {"step": 0, "kl": 0.0, "gold": num(sft.get("gold")), "proxy": num(sft.get("proxy")),
                       "gold_stderr": se if se is not None and se >= 0 else None, "sft": True})
    return pts


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
                row["p_value"] = normal_sf(row["z"])
            elif se is not None:  # no noise at all: any fall is a fall
                row["p_value"] = 0.0 if drop > 0 else 1.0
            tested.append(row)
    z_rows = sorted((r for r in tested if r["test"] == "z"), key=lambda r: r["p_value"])
    k = len(z_rows)
    flagged, rejecting = [], True
    for j, (r, p_holm) in enumerate(zip(z_rows, holm([r["p_value"] for r in z_rows]))):
        # Holm: the j-th smallest p-value is compared with alpha / (k - j); adjusted p-values
        # are the running maximum of (k - j) p, so they never decrease.
        r["p_holm"] = p_holm
        level = alpha / (k - j)
        r["threshold"] = (r["stderr"] or 0.0) * normal_isf(level)
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
        g0, g1 = fmt_pair(drop["gold_from"], drop["gold_to"], signed=True, least=3)
        p0, p1 = fmt_pair(drop["proxy_from"], drop["proxy_to"], signed=True, least=3)
        k0, k1 = fmt_pair(drop["from_kl"], drop["to_kl"])
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
    g0, g1 = fmt_pair(first["gold"], last["gold"], signed=True, least=3)
    k0, k1 = fmt_pair(first["kl"], last["kl"])
    start = f"{g0} (SFT model)" if first["sft"] else f"{g0} at KL {k0}"
    note = f"no over-optimisation seen: gold reward went from {start} to {g1} at KL {k1}"
    if first["proxy"] is not None and last["proxy"] is not None:
        p0, p1 = fmt_pair(first["proxy"], last["proxy"], signed=True, least=3)
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
    gold_ref = num(sft.get("gold")) if sft else None
    proxy_ref = num(sft.get("proxy")) if sft else None
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
        peak_gold = None if d_star is None else num(gold_base + gold_fit["beta"] * d_star)
        out.append({
            "run": run.get("run"), "method": run.get("method"), "checkpoints": len(ckpts), "max_kl": max_kl,
            "gold_fit": gold_fit, "proxy_fit": proxy_fit, "peak": peak["status"] if peak else None,
            "peak_sqrt_kl": num(d_star), "peak_kl": num(peak["peak_kl"]) if peak else None,
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
