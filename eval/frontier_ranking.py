"""Any number of methods ranked at matched KL: each method's per-seed reward-KL curves (the
fits of :func:`~trl_plus.eval.compare_frontiers`) averaged over the KL range every method
reaches, and each method's mean over its seeds with a t interval over seeds.

The ranking orders the means; whether two methods differ is the pairwise comparison's
question (``compare_frontiers``, Welch's t, with the family of all pairs under Holm's
correction), not the ranking's: two intervals that overlap can still belong to methods that
differ, and a rank is no test.

In-process API::

    from trl_plus.eval import rank_frontiers
    ranking = rank_frontiers(points, ["ppo", "dpo", "rloo"])
    ranking["rows"]       # best first: {"rank", "method", "mean", "ci", "seeds", "seed_values", "sd"}
    ranking["kl_range"]   # [lo, hi], the range every method reaches, or None (``reason`` says why)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from trl_plus.errors import DataError

from .frontier import GRID_POINTS, ESTIMATOR, _fmt, _median
from .frontier_fits import seed_curves as fitted_seed_curves
from .frontier_inputs import SFT, Point, parse_points
from .stats import t_interval


def rank_frontiers(
    points: Sequence[Mapping],
    methods: Sequence[str],
    confidence: float = 0.95,
    *,
    names: Mapping[str, str] | None = None,
    quantity: str = "gold reward",
) -> dict:
    """Every method's mean gold reward over the KL range all of them reach, best first.

    ``points`` are what :func:`~trl_plus.eval.compare_frontiers` takes (points of other
    methods are ignored); each seed's curve is fitted the same way, and the KL range runs
    from the largest, over the methods, median first-checkpoint KL to the smallest median
    last-checkpoint KL. With two methods the range, the per-seed numbers and the curves are
    those of ``compare_frontiers`` on the pair.

    Returns a dict with

    * ``methods``; ``kl_range``: ``[lo, hi]`` or None; ``status``: ``"ranked"`` or
      ``"insufficient"`` (no common range, or a method without usable points), ``reason``;
    * ``rows``: one per method, best mean first (methods without a mean last), each
      ``{"rank", "method", "mean", "ci", "seeds", "seed_values", "sd"}``; ``ci`` is the
      ``confidence`` t interval over the method's seeds (None with fewer than two);
    * ``per_seed`` ``{method: {seed: average}}``, ``seeds`` ``{method: count}``, ``text``;
    * for plotting every method's frontier at once, as ``compare_frontiers`` gives them for
      two: ``fits``, ``grid``, ``curves`` (mean over seeds) and ``seed_curves``.
    """
    methods = list(dict.fromkeys(methods))
    if not methods or any(not isinstance(m, str) or not m for m in methods):
        raise DataError(f"methods must be a non-empty list of method names, got {methods!r}")
    if SFT in methods:
        raise DataError(f"{SFT!r} is the common origin of every frontier, not a method to rank")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise DataError(f"confidence must be in (0, 1), got {confidence!r}")
    display = {m: str((names or {}).get(m, m)) for m in methods}

    usable, _, use_val, _ = parse_points(points, *methods)
    origins = [p for p in usable if p.method == SFT]
    origin = None
    if origins:
        origin = Point(origins[0].index, origins[0].ident, SFT, None, 0.0,
                       float(np.mean([p.test for p in origins])), float(np.mean([p.select for p in origins])), 0.0)
    curves = fitted_seed_curves(usable, methods, origin, use_val)

    result = {
        "methods": methods, "status": "insufficient", "reason": None, "kl_range": None, "confidence": float(confidence),
        "estimator": ESTIMATOR, "seeds": {m: len(curves[m]) for m in methods}, "per_seed": {m: {} for m in methods},
        "rows": [], "text": "", "grid": [], "curves": {m: [] for m in methods}, "seed_curves": {m: {} for m in methods},
        "fits": {m: {c.seed: {"coef": c.coef.tolist(), "anchored": c.anchored, "origin": c.origin, "start": c.start,
                              "reach": c.reach, "best": c.best} for c in curves[m]} for m in methods},
    }
    empty = [m for m in methods if not curves[m]]
    if empty:
        reason = (f"{', '.join(display[m] for m in empty)} {'has' if len(empty) == 1 else 'have'} no usable points "
                  "(no trained checkpoint with a KL estimate and a valid gold score)")
    else:
        starts = {m: _median(c.start for c in curves[m]) for m in methods}
        reaches = {m: _median(c.reach for c in curves[m]) for m in methods}
        m_lo, m_hi = max(methods, key=lambda m: starts[m]), min(methods, key=lambda m: reaches[m])
        lo, hi = starts[m_lo], reaches[m_hi]
        reason = None if hi > lo else (
            f"{display[m_hi]} reaches at most KL {hi:.2f} (median over its seeds' last checkpoints), while "
            f"{display[m_lo]} starts at KL {lo:.2f} (median over its seeds' first checkpoints)")
    if reason is not None:
        result.update(reason=reason, text=f"no ranking over a common KL range: {reason}.")
        result["rows"] = [{"rank": None, "method": m, "mean": None, "ci": None, "seeds": len(curves[m]),
                           "seed_values": []} for m in methods]
        return result

    per_seed = {m: {c.seed: c.average(lo, hi) for c in curves[m]} for m in methods}
    grid = np.linspace(lo, hi, GRID_POINTS)
    seed_curves = {m: {c.seed: c(grid) for c in curves[m]} for m in methods}
    rows = []
    for m in methods:
        values = list(per_seed[m].values())
        rows.append({"method": m, **t_interval(values, confidence), "seed_values": values})
    rows.sort(key=lambda r: -r["mean"])
    for i, row in enumerate(rows):
        row["rank"] = i + 1
    pct = f"{confidence * 100:g}%"
    ranked = "; ".join(f"{r['rank']}. {display[r['method']]} {_fmt(r['mean'])}"
                       + (f" ({pct} CI {_fmt(r['ci'][0])} to {_fmt(r['ci'][1])})" if r.get("ci") else " (no interval)")
                       for r in rows)
    result.update(
        status="ranked", kl_range=[float(lo), float(hi)], per_seed=per_seed, rows=rows, grid=grid.tolist(),
        curves={m: np.mean(list(seed_curves[m].values()), axis=0).tolist() for m in methods},
        seed_curves={m: {s: v.tolist() for s, v in seed_curves[m].items()} for m in methods},
        text=(f"ranked by mean {quantity} over KL {_fmt(lo)} to {_fmt(hi)}, the range every method reaches, with "
              f"t intervals over seeds: {ranked}"),
    )
    return result
