"""Is method A or method B better at matched KL? Per-seed reward-KL curves, fitted so that
the shape of a sweep cannot tilt the answer, compared over the KL range the methods reach,
with the seed as the unit of replication.

Why this shape:

* A checkpoint's gold reward only means something next to its KL from the reference, and
  the two methods' sweeps land at different KLs. Picking each method's best checkpoint
  under a KL budget rewards whichever sweep happened to drift further; comparing curves at
  the same KL does not.
* The curve of a seed is not the upper envelope of its checkpoints joined by straight
  lines. That envelope depends on the sweep's shape: chords between sparse points sit
  below a concave curve, and the maximum over more noisy checkpoints is higher, so the
  method with more checkpoints per seed wins on identical truths. Each seed's curve is
  instead a least-squares fit of Gao et al.'s (2022) form through the SFT origin,

      reward(KL) - reward(SFT) = alpha * d - beta * d * log(d),   d = sqrt(KL),

  which holds both a square-root rise (beta = 0) and a rise that peaks and falls
  (over-optimisation). The model is linear in (alpha, beta), so with independent,
  zero-mean noise the fitted curve is unbiased at every KL whatever the number or the
  placement of the checkpoints: more checkpoints make a seed's number less noisy, never
  higher. Where the truth is outside that family the fit is biased by how far the
  family misses it over the checkpoints' span, and that bias differs between sweep
  designs; simulated on concave (1 - exp), near-linear, square-root, tanh and k*exp(-k)
  truths with 3 against 9 and 6 against 18 checkpoints per seed, the false-winner rate
  stays at or under 5% (tests/test_frontier_fairness.py). Without an SFT point the fit
  has a free intercept.
* Every checkpoint of a seed enters its fit, so no checkpoint is selected and nothing is
  favoured for being lucky. The one choice left is where a seed's curve is best, for a
  seed that stops short of the compared range: beyond its last checkpoint it holds the
  value its curve reached at its best KL. When validation scores (``gold_val``) are
  given, that KL is chosen on a fit to them and the value is read from the test fit;
  when ``kl_val`` (KL estimated on the validation prompts) is given it places the
  checkpoints for the fits, so noise shared by a checkpoint's test KL and its test
  reward (the same completions) cannot pull its fit, while ``kl`` places every reported
  number (the range, the plot).
* A failed seed is evidence against its method: its curve, at or below SFT, enters the
  average like any other, and a seed that stops early holds its best value over the rest
  of the range. The range is decided by what the methods reach (for each method the
  median over its seeds of the first and last checkpoint's KL; the range runs from the
  larger start to the smaller reach), never by one worst seed.
* Everything that varies between training seeds (data order, initialisation, the sweep's
  luck) is shared by all the checkpoints of one seed, so a seed is one observation: each
  seed contributes one number per method and the interval is Welch's t over those
  numbers. Intervals over prompts or checkpoints would treat one seed's luck as many
  independent draws and claim certainty the experiment does not have.

In-process API::

    from trl_plus.eval import compare_frontiers, power_analysis
    verdict = compare_frontiers(points, "ppo", "dpo")
    plan = power_analysis(verdict["per_seed"]["ppo"], verdict["per_seed"]["dpo"], difference=0.02)

The points are checked in :mod:`.frontier_inputs`, each seed's curve is fitted in
:mod:`.frontier_fits`, Welch's interval and the power of its test are
:mod:`trl_plus.eval.stats`' (:func:`~trl_plus.eval.stats.welch_interval`,
:func:`~trl_plus.eval.stats.power_analysis`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from trl_plus.errors import DataError

from .frontier_fits import SeedCurve, seed_curves as fitted_seed_curves
from .frontier_inputs import SFT, Point, parse_points
from .stats import MIN_SEEDS, welch_interval

GRID_POINTS = 200
METHOD = "Welch's t over per-seed averages of fitted reward-KL curves"
ESTIMATOR = ("per-seed least-squares fit of reward - reward(SFT) = alpha*d - beta*d*log(d), d = sqrt(KL), "
             "averaged over the compared KL range")


def _ahead(grid: np.ndarray, ca: np.ndarray, cb: np.ndarray, a: str, b: str) -> list[dict]:
    d = ca - cb
    tol = 1e-12 * max(1.0, float(np.abs(np.concatenate((ca, cb))).max()))
    sign = np.where(np.abs(d) <= tol, 0, np.sign(d)).astype(int)
    leader = {1: a, -1: b, 0: None}
    segments, start, cur = [], float(grid[0]), sign[0]
    for i in range(1, grid.size):
        if sign[i] == cur:
            continue
        if cur and sign[i]:
            x0, x1, d0, d1 = grid[i - 1], grid[i], d[i - 1], d[i]
            boundary = float(x0 + (x1 - x0) * d0 / (d0 - d1))
        else:
            boundary = float(grid[i] if sign[i] == 0 else grid[i - 1])
        if boundary > start:
            segments.append({"from": start, "to": boundary, "leader": leader[cur]})
        start, cur = boundary, sign[i]
    segments.append({"from": start, "to": float(grid[-1]), "leader": leader[cur]})
    return segments


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _median(values) -> float:
    return float(np.median(np.asarray(list(values), dtype=float)))


def compare_frontiers(
    points: Sequence[Mapping],
    a: str,
    b: str,
    confidence: float = 0.95,
    *,
    names: Mapping[str, str] | None = None,
    quantity: str = "gold reward",
) -> dict:
    """Which of two methods reaches higher gold reward at the same KL, with an interval over seeds.

    Parameters
    ----------
    points:
        One dict per evaluated checkpoint, with

        * ``method``: any string; points whose method is neither ``a``, ``b`` nor
          ``"sft"`` are ignored.
        * ``seed``: the training seed (required for ``a`` and ``b`` points).
        * ``run``, ``step``: the sweep run and checkpoint step; with ``id`` (optional)
          they identify the point in the returned lists.
        * ``kl``: estimated KL from the reference policy on the test prompts; ``None``
          or NaN means "not estimated" and the point is excluded, never read as 0.
        * ``gold``: per-prompt gold rewards on the test prompts, the same prompts in the
          same order for every point; ``None`` (or NaN) entries are failed scores and are
          left out of that point's mean.
        * ``gold_val`` (optional): per-prompt gold rewards on separate validation prompts.
          Given to every point or to none; when given, the KL at which a seed's curve is
          best (the value it holds past its last checkpoint) is chosen on them.
        * ``kl_val`` (optional): KL estimated on the validation prompts, independently of
          ``kl``. Given to every point or to none; when given, it places the checkpoints
          for the fits, and ``kl`` places the reported numbers.

        An ``"sft"`` point (KL 0) is the common origin of every curve. Several SFT
        points are averaged into one origin. Other keys are ignored.
    a, b:
        The two method names to compare (different, and neither ``"sft"``).
    confidence:
        Confidence level of the interval, in (0, 1).
    names:
        Optional display names for ``text``, ``{method: name}``; the method strings are
        used otherwise.
    quantity:
        What the per-prompt values measure, for ``text`` (e.g. ``"win rate against SFT"``
        when ``gold`` holds per-prompt win scores instead of gold rewards).

    Method
    ------
    Each seed's curve is the least-squares fit of ``reward - reward(SFT) = alpha*d -
    beta*d*log(d)`` (``d = sqrt(KL)``) to every one of its checkpoints (a seed with one
    checkpoint fits ``alpha`` alone; without an SFT point the fit has an intercept);
    past its last checkpoint it holds its value at the KL where it is best. The module
    docstring says why this is unbiased whatever the sweep's shape, and where it is not.
    The KL range compared runs from the larger, over the two methods, of the median over
    a method's seeds of its first checkpoint's KL, to the smaller of the median of its
    last checkpoint's KL. Each seed's number is its curve's exact average over that range.
    The difference is the mean of ``a``'s seed numbers minus the mean of ``b``'s, with a
    Welch t interval (Welch-Satterthwaite degrees of freedom), which stays valid with a
    handful of seeds and unequal spreads. A method is declared better only when the
    interval excludes 0.

    Returns
    -------
    dict with

    * ``winner``: ``a`` or ``b`` when the interval excludes 0, else None.
    * ``status``: ``"significant"``, ``"not significant"`` or ``"insufficient"``:
      insufficient means no interval can be formed, because a method has no usable
      points, or fewer than 2 seeds, or the methods reach no common KL range; ``reason``
      says which.
    * ``difference``: mean of ``a`` minus mean of ``b`` over the KL range (also given
      when insufficient if both methods have a seed and a common range), or None.
    * ``ci``: ``[lo, hi]`` or None; ``df``: Welch degrees of freedom or None;
      ``p_value``: the two-sided Welch p-value or None (for multiplicity control over
      several comparisons); ``confidence``.
    * ``kl_range``: ``[lo, hi]`` compared, or None.
    * ``seeds``: ``{method: number of usable seeds}``; ``per_seed``:
      ``{method: {seed: curve average}}``; pass its values to
      :func:`~trl_plus.eval.stats.power_analysis` to plan how many seeds a conclusive
      comparison needs.
    * ``text``: one sentence with the outcome, KL range, difference and interval, seed
      counts and the unit of uncertainty; ``reason``: why insufficient, else None.
    * ``method``: how the interval was formed; ``estimator``: how each seed's curve was
      formed; ``selection``: ``"gold_val"`` or ``"gold"`` (which score chose each seed's
      best KL); ``placement``: ``"kl_val"`` or ``"kl"`` (which KL placed the fits'
      checkpoints).
    * ``grid``, ``curves``: KL values over the compared range and ``{method: mean curve
      over seeds}`` on them, ``seed_curves``: ``{method: {seed: curve on the grid}}``, for
      plotting and for comparisons at one KL; ``ahead``: segments ``{"from", "to",
      "leader"}`` of the grid where one mean curve is above the other (leader None where
      they are equal).
    * ``fits``: ``{method: {seed: {"coef", "anchored", "origin", "start", "reach",
      "best"}}}``, enough to redraw each seed's curve anywhere.
    * ``frontier_points``: ``{method: {seed: [id or (run, step) of the SFT origin and of
      every checkpoint in its fit]}}``.
    * ``excluded``: ``[{"point", "method", "seed", "reason"}]`` for points left out.

    Raises
    ------
    DataError
        ``a == b``, a method named ``"sft"``, a confidence outside (0, 1), or a malformed
        point (no method, seed or gold; non-numeric values; ``gold``/``gold_val`` lengths
        that differ between points; ``gold_val`` or ``kl_val`` on some points only).
    """
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, str) or not value:
            raise DataError(f"{name} must be a method name (a non-empty string), got {value!r}")
    if a == b:
        raise DataError(f"a and b are both {a!r}; compare two different methods")
    if SFT in (a, b):
        raise DataError(f"{SFT!r} is the common origin of every frontier, not a method to compare")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise DataError(f"confidence must be in (0, 1), got {confidence!r}")
    names = dict(names or {})
    display = {m: str(names.get(m, m)) for m in (a, b)}

    usable, excluded, use_val, use_kl_val = parse_points(points, a, b)
    origins = [p for p in usable if p.method == SFT]
    origin = None
    if origins:
        origin = Point(origins[0].index, origins[0].ident, SFT, None, 0.0,
                        float(np.mean([p.test for p in origins])), float(np.mean([p.select for p in origins])), 0.0)
    origin_idents = [p.ident for p in origins]

    curves_by_method: dict[str, list[SeedCurve]] = fitted_seed_curves(usable, (a, b), origin, use_val)

    counts = {m: len(curves_by_method[m]) for m in (a, b)}
    result = {
        "a": a,
        "b": b,
        "winner": None,
        "status": "insufficient",
        "difference": None,
        "ci": None,
        "df": None,
        "p_value": None,
        "confidence": float(confidence),
        "kl_range": None,
        "seeds": counts,
        "per_seed": {m: {} for m in (a, b)},
        "method": METHOD,
        "estimator": ESTIMATOR,
        "selection": "gold_val" if use_val else "gold",
        "placement": "kl_val" if use_kl_val else "kl",
        "text": "",
        "reason": None,
        "grid": [],
        "curves": {m: [] for m in (a, b)},
        "seed_curves": {m: {} for m in (a, b)},
        "ahead": [],
        "fits": {m: {c.seed: {"coef": c.coef.tolist(), "anchored": c.anchored, "origin": c.origin,
                              "start": c.start, "reach": c.reach, "best": c.best}
                     for c in curves_by_method[m]} for m in (a, b)},
        "frontier_points": {m: {c.seed: origin_idents + list(c.idents) for c in curves_by_method[m]} for m in (a, b)},
        "excluded": excluded,
    }

    reasons = []
    empty = [m for m in (a, b) if counts[m] == 0]
    short = [m for m in (a, b) if counts[m] < MIN_SEEDS]
    if short:
        who = " and ".join(f"{display[m]} has {_seeds(counts[m])}" for m in short)
        if empty:
            who += (f" ({' and '.join(display[m] for m in empty)}: no usable points, i.e. no trained checkpoint "
                    "with a KL estimate and a valid gold score)")
        reasons.append(f"{who}; an interval over seeds needs at least {MIN_SEEDS} per method")

    lo = hi = None
    if not empty:
        starts = {m: _median(c.start for c in curves_by_method[m]) for m in (a, b)}
        reaches = {m: _median(c.reach for c in curves_by_method[m]) for m in (a, b)}
        m_lo = max((a, b), key=lambda m: starts[m])
        m_hi = min((a, b), key=lambda m: reaches[m])
        lo, hi = starts[m_lo], reaches[m_hi]
        if hi <= lo:
            if m_hi == m_lo:
                why = (f"{display[m_hi]}'s checkpoints all sit at KL {hi:.2f} (median over its seeds), so there is no "
                       "KL interval to average over")
            else:
                why = (f"{display[m_hi]} reaches at most KL {hi:.2f} (median over its seeds' last checkpoints), while "
                       f"{display[m_lo]} starts at KL {lo:.2f} (median over its seeds' first checkpoints)")
            reasons.append(f"no common KL range: {why}")
            lo = hi = None

    if lo is not None:
        per_seed = {m: {c.seed: c.average(lo, hi) for c in curves_by_method[m]} for m in (a, b)}
        grid = np.linspace(lo, hi, GRID_POINTS)
        seed_curves = {m: {c.seed: c(grid) for c in curves_by_method[m]} for m in (a, b)}
        mean_curves = {m: np.mean(list(seed_curves[m].values()), axis=0) for m in (a, b)}
        xa, xb = (np.array(list(per_seed[m].values())) for m in (a, b))
        result.update(
            kl_range=[float(lo), float(hi)],
            per_seed=per_seed,
            difference=float(xa.mean() - xb.mean()),
            grid=grid.tolist(),
            curves={m: c.tolist() for m, c in mean_curves.items()},
            seed_curves={m: {s: v.tolist() for s, v in seed_curves[m].items()} for m in (a, b)},
            ahead=_ahead(grid, mean_curves[a], mean_curves[b], a, b),
        )

    A, B = display[a], display[b]
    pct = f"{confidence * 100:g}%"
    if reasons:
        reason = "; and ".join(reasons)
        text = f"insufficient evidence to compare {A} and {B} because {reason}"
        if result["difference"] is not None:
            text += (f" (over KL {_fmt(lo)} to {_fmt(hi)}, {A} minus {B} averages "
                     f"{_fmt(result['difference'])} in {quantity}, with no interval)")
        result.update(reason=reason, text=text + ".")
        return result

    diff, ci, df, p = welch_interval(xa, xb, confidence)
    winner = a if ci[0] > 0 else b if ci[1] < 0 else None
    result.update(
        difference=diff, ci=ci, df=df, p_value=p, winner=winner,
        status="significant" if winner is not None else "not significant",
    )
    if winner == a:
        head = f"{A} is better than {B} at matched KL"
    elif winner == b:
        head = f"{B} is better than {A} at matched KL"
    else:
        head = f"no detectable difference between {A} and {B} at matched KL"
    result["text"] = (
        f"{head}: over KL {_fmt(lo)} to {_fmt(hi)}, {A} minus {B} {quantity} is {_fmt(diff)} "
        f"({pct} CI {_fmt(ci[0])} to {_fmt(ci[1])}), from {_seeds(counts[a])} of {A} and "
        f"{_seeds(counts[b])} of {B}, with seeds as the unit of uncertainty (Welch's t, df {df:.1f})."
    )
    return result
