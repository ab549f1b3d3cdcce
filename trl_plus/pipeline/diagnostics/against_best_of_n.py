"""Each method's matched-KL frontier against the best-of-n baseline, at best-of-n's KLs."""

from __future__ import annotations

import numpy as np

from ...eval.stats import MIN_SEEDS, offset_interval
from .values import num


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
    names = names or {}
    if not bon or not grid or not curves:
        return []
    lo_kl, hi_kl = grid[0], grid[-1]
    pts = [q for q in bon.get("points", []) if num(q.get("gold")) is not None and num(q.get("kl")) is not None]
    inside = [q for q in pts if lo_kl <= q["kl"] <= hi_kl]
    outside = [q["n"] for q in pts if not lo_kl <= q["kl"] <= hi_kl]
    pct = f"{confidence * 100:g}%"
    out = []
    for method, curve in curves.items():
        if method in skip or not curve or len(curve) != len(grid):
            continue
        name = names.get(method, method)
        seeds = [list(c) for c in ((seed_curves or {}).get(method) or {}).values()
                 if c is not None and len(c) == len(grid) and all(num(v) is not None for v in c)]
        interval = len(seeds) >= MIN_SEEDS
        rows = []
        for q in inside:
            gold, se_b = float(q["gold"]), num(q.get("gold_stderr")) or 0.0
            row = {"n": q["n"], "kl": float(q["kl"]), "difference": None, "ci": None, "df": None, "verdict": None}
            if interval:
                vals = np.array([np.interp(q["kl"], grid, c) for c in seeds])
                iv = offset_interval(vals, gold, se_b, q.get("prompts"), confidence)
                lo, hi = iv["ci"]
                row.update(iv, verdict="above" if lo > 0 else "below" if hi < 0 else "not distinguishable")
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
