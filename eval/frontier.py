"""Is method A or method B better at matched KL? Per-seed reward-KL frontiers compared over
the KL range every seed covers, with the seed as the unit of replication.

Why this shape:

* A checkpoint's gold reward only means something next to its KL from the reference, and
  the two methods' sweeps land at different KLs. Picking each method's best checkpoint
  under a KL budget rewards whichever sweep happened to drift further; comparing frontier
  curves at the same KL does not.
* Everything that varies between training seeds (data order, initialisation, the sweep's
  luck) is shared by all the checkpoints of one seed, so a seed is one observation: each
  seed contributes one number per method and the interval is Welch's t over those
  numbers. Intervals over prompts or checkpoints would treat one seed's luck as many
  independent draws and claim certainty the experiment does not have.
* Choosing which checkpoints form the frontier by the same scores that are then reported
  favours lucky checkpoints. When validation scores (``gold_val``) are given they do the
  choosing and the test scores (``gold``) are what is reported.

In-process API::

    from trl_plus.eval import compare_frontiers, power_analysis
    verdict = compare_frontiers(points, "ppo", "dpo")
    plan = power_analysis(verdict["per_seed"]["ppo"], verdict["per_seed"]["dpo"])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from trl_plus.errors import DataError

SFT = "sft"
GRID_POINTS = 200
MIN_SEEDS = 2
METHOD = "Welch's t over per-seed frontier averages"
POWER_METHOD = "two-sided two-sample t-test with the pooled seed SD, noncentral t"


@dataclass
class _Point:
    index: int
    ident: object
    method: str
    seed: object
    kl: float
    test: float
    select: float | None = None


@dataclass
class _SeedFrontier:
    seed: object
    kls: np.ndarray
    values: np.ndarray
    idents: list = field(default_factory=list)
    start: float = 0.0
    reach: float = 0.0


def _ident(p: Mapping, index: int):
    if p.get("id") is not None:
        return p["id"]
    if p.get("run") is not None or p.get("step") is not None:
        return (p.get("run"), p.get("step"))
    return index


def _label(p: Mapping, index: int) -> str:
    if p.get("id") is not None:
        return f"point {index} (id {p['id']!r})"
    if p.get("run") is not None or p.get("step") is not None:
        return f"point {index} (run {p.get('run')!r}, step {p.get('step')!r})"
    return f"point {index}"


def _scores(values, key: str, label: str) -> np.ndarray:
    """Per-prompt scores as floats, a failed score (None or NaN) as NaN."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (Sequence, np.ndarray)):
        raise DataError(f"{label}: {key} must be a list of per-prompt rewards, got {type(values).__name__}")
    arr = np.asarray(values)
    if arr.dtype.kind == "O":
        bad = [v for v in arr.ravel() if v is not None and not isinstance(v, (int, float, np.number))]
        if bad:
            raise DataError(f"{label}: {key} holds a non-numeric entry {bad[0]!r}")
        arr = arr.astype(float)
    elif arr.dtype.kind not in "fiub":
        bad = next((v for v in values if v is not None and not isinstance(v, (int, float, np.number))), None)
        raise DataError(f"{label}: {key} holds a non-numeric entry {bad!r}; rewards must be numbers or None")
    arr = arr.astype(float, copy=False)
    if arr.ndim != 1:
        raise DataError(f"{label}: {key} must be a flat list (one reward per prompt), got shape {arr.shape}")
    if np.isinf(arr).any():
        raise DataError(f"{label}: {key} holds an infinite reward")
    return arr


def _kl(value, label: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, (int, float, np.number)):
        raise DataError(f"{label}: kl must be a number or None, got {value!r}")
    return float(value)


def _mean(arr: np.ndarray) -> float | None:
    valid = arr[~np.isnan(arr)]
    return float(valid.mean()) if valid.size else None


def _parse(points, a: str, b: str):
    """Validated points of a, b and SFT, and the ones left out with why."""
    if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Sequence):
        raise DataError(f"points must be a list of dicts, got {type(points).__name__}")
    kept: list[tuple[_Point, np.ndarray | None, Mapping]] = []
    excluded: list[dict] = []
    lengths: dict[str, tuple[int, str]] = {}
    for i, p in enumerate(points):
        if not isinstance(p, Mapping):
            raise DataError(f"point {i}: expected a dict, got {type(p).__name__}")
        label = _label(p, i)
        if "method" not in p:
            raise DataError(f"{label}: has no 'method'")
        method = p["method"]
        if method not in (a, b, SFT):
            continue
        if method != SFT and "seed" not in p:
            raise DataError(f"{label}: a {method} point needs a 'seed' (the unit of replication)")
        if "gold" not in p or p["gold"] is None:
            raise DataError(f"{label}: has no 'gold' (per-prompt gold rewards on the test prompts)")
        arrays = {"gold": _scores(p["gold"], "gold", label)}
        if p.get("gold_val") is not None:
            arrays["gold_val"] = _scores(p["gold_val"], "gold_val", label)
        for key, arr in arrays.items():
            first = lengths.setdefault(key, (arr.size, label))
            if arr.size != first[0]:
                raise DataError(
                    f"{label}: {key} has {arr.size} prompts but {first[1]} has {first[0]}; "
                    "every point must be scored on the same prompts in the same order"
                )
        seed = p.get("seed")
        try:
            hash(seed)
        except TypeError:
            raise DataError(f"{label}: seed must be hashable (a number or string), got {seed!r}") from None
        ident = _ident(p, i)
        kl = _kl(p.get("kl"), label)
        entry = {"point": ident, "method": method, "seed": seed}
        if kl is None or not math.isfinite(kl):
            why = "KL not estimated (None)" if kl is None else f"KL is {kl} (not a finite estimate)"
            excluded.append({**entry, "reason": why})
            continue
        test = _mean(arrays["gold"])
        if test is None:
            excluded.append({**entry, "reason": "no valid gold score (every prompt failed)"})
            continue
        kept.append((_Point(i, ident, method, seed, kl, test), arrays.get("gold_val"), p))

    with_val = [k for k in kept if k[1] is not None]
    use_val = bool(with_val)
    if use_val and len(with_val) != len(kept):
        lacking = next(k for k in kept if k[1] is None)
        having = _label(with_val[0][2], with_val[0][0].index)
        raise DataError(
            f"{_label(lacking[2], lacking[0].index)}: has no gold_val while {having} has one; the "
            "frontier is chosen by one score for every point, so give gold_val to all or none"
        )
    out: list[_Point] = []
    for pt, val, _ in kept:
        if use_val:
            pt.select = _mean(val)
            if pt.select is None:
                excluded.append({"point": pt.ident, "method": pt.method, "seed": pt.seed,
                                 "reason": "no valid gold_val score (every validation prompt failed)"})
                continue
        else:
            pt.select = pt.test
        out.append(pt)
    return out, excluded, use_val


def _pareto(kls: np.ndarray, select: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, by increasing KL."""
    le = kls[None, :] <= kls[:, None]
    ge = select[None, :] >= select[:, None]
    strict = (kls[None, :] < kls[:, None]) | (select[None, :] > select[:, None])
    dominated = (le & ge & strict).any(axis=1)
    keep = np.flatnonzero(~dominated)
    return keep[np.argsort(kls[keep], kind="stable")]


def _frontier(seed, trained: list[_Point], origin: list[_Point], origin_idents: list) -> _SeedFrontier:
    candidates = trained + origin
    kls = np.array([p.kl for p in candidates])
    select = np.array([p.select for p in candidates])
    on = _pareto(kls, select)
    xs = kls[on]
    ys = np.array([candidates[j].test for j in on])
    # Points tied in KL and selection score can still differ on test; np.interp needs one
    # value per KL, and their average is what that KL scored.
    ux, inverse = np.unique(xs, return_inverse=True)
    uy = np.bincount(inverse, weights=ys) / np.bincount(inverse)
    return _SeedFrontier(
        seed=seed,
        kls=ux,
        values=uy,
        idents=[i for j in on for i in (origin_idents if j >= len(trained) else [candidates[j].ident])],
        start=min(p.kl for p in trained),
        reach=float(ux[-1]),
    )


def _average(f: _SeedFrontier, lo: float, hi: float) -> float:
    """Exact mean of the piecewise-linear frontier over [lo, hi] (trapezoids at its kinks)."""
    inner = f.kls[(f.kls > lo) & (f.kls < hi)]
    x = np.concatenate(([lo], inner, [hi]))
    y = np.interp(x, f.kls, f.values)
    return float(np.trapezoid(y, x) / (hi - lo))


def _welch(xa: np.ndarray, xb: np.ndarray, confidence: float):
    from scipy import stats

    na, nb = xa.size, xb.size
    diff = float(xa.mean() - xb.mean())
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    se2 = va + vb
    if se2 > 0:
        df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
        half = float(stats.t.ppf((1 + confidence) / 2, df) * math.sqrt(se2))
    else:
        df, half = float(na + nb - 2), 0.0
    return diff, [diff - half, diff + half], float(df)


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
        * ``kl``: estimated KL from the reference policy; ``None`` or NaN means "not
          estimated" and the point is excluded, never read as 0.
        * ``gold``: per-prompt gold rewards on the test prompts, the same prompts in the
          same order for every point; ``None`` (or NaN) entries are failed scores and are
          left out of that point's mean.
        * ``gold_val`` (optional): per-prompt gold rewards on separate validation prompts.
          When given (to every point, or to none), it alone decides which checkpoints form
          each frontier, and ``gold`` supplies the reported values, so a checkpoint that
          is lucky on the test prompts cannot select itself.

        An ``"sft"`` point (KL 0) is the common origin of every frontier. Several SFT
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
    For every seed of each method, its frontier is the upper envelope of all its points
    (every run of the sweep, every checkpoint, plus the SFT origin): the points that no
    other point beats with KL <= and reward >= (strictly better in one), by increasing KL,
    joined by straight lines. The KL range compared starts at the largest, over every seed
    of both methods, of the seed's smallest trained-checkpoint KL, and ends at the
    smallest, over every seed, of the largest KL on that seed's frontier: where every seed
    has evidence of its own. Each seed's number is its frontier's exact average over that
    range. The difference is the mean of ``a``'s seed numbers minus the mean of ``b``'s,
    with a Welch t interval (Welch-Satterthwaite degrees of freedom), which stays valid
    with a handful of seeds and unequal spreads. A method is declared better only when
    the interval excludes 0.

    Returns
    -------
    dict with

    * ``winner``: ``a`` or ``b`` when the interval excludes 0, else None.
    * ``status``: ``"significant"``, ``"not significant"`` or ``"insufficient"``:
      insufficient means no interval can be formed, because a method has fewer than 2
      usable seeds or the seeds' frontiers share no KL range; ``reason`` says which.
    * ``difference``: mean of ``a`` minus mean of ``b`` over the KL range (also given
      when insufficient if both methods have a seed and a common range), or None.
    * ``ci``: ``[lo, hi]`` or None; ``df``: Welch degrees of freedom or None;
      ``confidence``.
    * ``kl_range``: ``[lo, hi]`` compared, or None.
    * ``seeds``: ``{method: number of usable seeds}``; ``per_seed``:
      ``{method: {seed: frontier average}}``; pass its values to :func:`power_analysis` to
      plan how many seeds a conclusive comparison needs.
    * ``text``: one sentence with the outcome, KL range, difference and interval, seed
      counts and the unit of uncertainty; ``reason``: why insufficient, else None.
    * ``method``: how the interval was formed; ``selection``: ``"gold_val"`` or ``"gold"``
      (which score chose the frontier points).
    * ``grid``, ``curves``: KL values and ``{method: mean frontier over seeds}`` on them,
      for plotting; ``ahead``: segments ``{"from", "to", "leader"}`` of the grid where one
      mean curve is above the other (leader None where they are equal).
    * ``frontier_points``: ``{method: {seed: [id or (run, step) of its frontier points]}}``.
    * ``excluded``: ``[{"point", "method", "seed", "reason"}]`` for points left out.

    Raises
    ------
    DataError
        ``a == b``, a method named ``"sft"``, a confidence outside (0, 1), or a malformed
        point (no method, seed or gold; non-numeric values; ``gold``/``gold_val`` lengths
        that differ between points; ``gold_val`` on some points only).
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

    usable, excluded, use_val = _parse(points, a, b)
    origin = [p for p in usable if p.method == SFT]
    if len(origin) > 1:
        merged = _Point(origin[0].index, origin[0].ident, SFT, None,
                        float(np.mean([p.kl for p in origin])),
                        float(np.mean([p.test for p in origin])),
                        float(np.mean([p.select for p in origin])))
        origin_idents = [p.ident for p in origin]
        origin = [merged]
    else:
        origin_idents = [p.ident for p in origin]

    frontiers: dict[str, list[_SeedFrontier]] = {}
    for m in (a, b):
        by_seed: dict = {}
        for p in usable:
            if p.method == m:
                by_seed.setdefault(p.seed, []).append(p)
        try:
            seeds = sorted(by_seed)
        except TypeError:
            seeds = list(by_seed)
        frontiers[m] = [_frontier(s, by_seed[s], origin, origin_idents) for s in seeds]

    counts = {m: len(frontiers[m]) for m in (a, b)}
    result = {
        "a": a,
        "b": b,
        "winner": None,
        "status": "insufficient",
        "difference": None,
        "ci": None,
        "df": None,
        "confidence": float(confidence),
        "kl_range": None,
        "seeds": counts,
        "per_seed": {m: {} for m in (a, b)},
        "method": METHOD,
        "selection": "gold_val" if use_val else "gold",
        "text": "",
        "reason": None,
        "grid": [],
        "curves": {m: [] for m in (a, b)},
        "ahead": [],
        "frontier_points": {m: {f.seed: list(f.idents) for f in frontiers[m]} for m in (a, b)},
        "excluded": excluded,
    }

    reasons = []
    short = [m for m in (a, b) if counts[m] < MIN_SEEDS]
    if short:
        who = " and ".join(f"{display[m]} has {_seeds(counts[m])}" for m in short)
        reasons.append(f"{who}; an interval over seeds needs at least {MIN_SEEDS} per method")

    lo = hi = None
    if all(counts.values()):
        every = [(m, f) for m in (a, b) for f in frontiers[m]]
        m_lo, f_lo = max(every, key=lambda mf: mf[1].start)
        m_hi, f_hi = min(every, key=lambda mf: mf[1].reach)
        lo, hi = f_lo.start, f_hi.reach
        if hi <= lo:
            if f_hi.reach <= f_hi.start:  # a frontier of one point: nothing beat it
                why = (f"frontier is the single point{''.join(' ' + str(i) for i in f_hi.idents[:1])} at KL "
                       f"{hi:.2f} (none of its other checkpoints improves on it), so there is no KL interval to "
                       f"average over")
            else:
                why = f"frontier reaches at most KL {hi:.2f}, while {display[m_lo]} seed {f_lo.seed}'s starts at KL {lo:.2f}"
            reasons.append(f"no common KL range: {display[m_hi]} seed {f_hi.seed}'s {why}")
            lo = hi = None

    if lo is not None:
        per_seed = {m: {f.seed: _average(f, lo, hi) for f in frontiers[m]} for m in (a, b)}
        grid = np.linspace(lo, hi, GRID_POINTS)
        curves = {m: np.mean([np.interp(grid, f.kls, f.values) for f in frontiers[m]], axis=0) for m in (a, b)}
        xa, xb = (np.array(list(per_seed[m].values())) for m in (a, b))
        result.update(
            kl_range=[float(lo), float(hi)],
            per_seed=per_seed,
            difference=float(xa.mean() - xb.mean()),
            grid=grid.tolist(),
            curves={m: c.tolist() for m, c in curves.items()},
            ahead=_ahead(grid, curves[a], curves[b], a, b),
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

    diff, ci, df = _welch(xa, xb, confidence)
    winner = a if ci[0] > 0 else b if ci[1] < 0 else None
    result.update(
        difference=diff, ci=ci, df=df, winner=winner,
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


def _per_seed_values(values, name: str) -> np.ndarray:
    if isinstance(values, Mapping):
        values = list(values.values())
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise DataError(f"{name} must be a list of per-seed numbers, got {type(values).__name__}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
            raise DataError(f"{name} must hold finite numbers (one per seed), got {v!r}")
        out.append(float(v))
    return np.array(out)


def _power(effect: float, n1: float, n2: float, alpha: float) -> float:
    """Power of the two-sided two-sample t-test against a standardised difference ``effect``."""
    from scipy import stats

    df = n1 + n2 - 2
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = effect * math.sqrt(n1 * n2 / (n1 + n2))
    if ncp == 0:
        return float(alpha)
    upper = stats.nct.sf(crit, df, ncp)
    lower = stats.nct.cdf(-crit, df, ncp)
    # scipy's noncentral t returns NaN far in its tails (large df and noncentrality), where
    # the normal approximation is accurate to many digits.
    if not math.isfinite(upper):
        upper = stats.norm.sf(crit - ncp)
    if not math.isfinite(lower):
        lower = stats.norm.cdf(-crit - ncp)
    return float(min(1.0, upper + lower))


def power_analysis(
    per_seed_a,
    per_seed_b,
    difference: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    max_seeds: int = 1000,
) -> dict:
    """How many seeds a matched-KL comparison needs, from the seed numbers of one already run.

    Parameters
    ----------
    per_seed_a, per_seed_b:
        The per-seed frontier averages of the two methods (lists of floats, or the
        ``{seed: value}`` dicts of ``compare_frontiers(...)["per_seed"]``).
    difference:
        The true difference to plan for, in reward units; default: the observed
        ``mean(a) - mean(b)``. Only its size matters.
    alpha:
        Two-sided significance level.
    power:
        The wanted probability of detecting ``difference``.
    max_seeds:
        The largest per-method seed count searched.

    Method
    ------
    The seed-to-seed SD is pooled over both methods. Power is that of a two-sided
    two-sample t-test, computed exactly with the noncentral t distribution (noncentrality
    ``d * sqrt(n_a n_b / (n_a + n_b))``, ``n_a + n_b - 2`` degrees of freedom, ``d`` the
    difference in SDs). ``compare_frontiers`` uses Welch's t, whose power is close to
    this under similar spreads; the plan is a guide, and the observed SD from few seeds
    is itself uncertain.

    Returns
    -------
    dict with ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``difference``, ``sd`` (pooled
    seed SD), ``effect_size`` (``|difference| / sd``), ``alpha``, ``power``,
    ``seeds_needed`` (seeds per method, equal for both, for the wanted power; None when
    the difference is 0 or more than ``max_seeds`` would be needed),
    ``min_detectable_difference`` (the smallest true difference the current seed counts
    detect with the wanted power), ``current_power`` (the current design's power against
    ``difference``), ``method``, ``text`` and ``reason`` (None unless something could not
    be computed). With fewer than 2 seeds for a method there is no seed SD: the computed
    fields are None and ``reason`` says why.

    Raises
    ------
    DataError
        Non-numeric or non-finite seed values, ``alpha`` or ``power`` outside (0, 1),
        ``max_seeds`` below 2.
    """
    xa = _per_seed_values(per_seed_a, "per_seed_a")
    xb = _per_seed_values(per_seed_b, "per_seed_b")
    for name, value in (("alpha", alpha), ("power", power)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise DataError(f"{name} must be in (0, 1), got {value!r}")
    if isinstance(max_seeds, bool) or not isinstance(max_seeds, (int, np.integer)) or max_seeds < MIN_SEEDS:
        raise DataError(f"max_seeds must be an integer of at least {MIN_SEEDS}, got {max_seeds!r}")
    if difference is not None and (
        isinstance(difference, bool) or not isinstance(difference, (int, float, np.number))
        or not math.isfinite(difference)
    ):
        raise DataError(f"difference must be a finite number or None, got {difference!r}")

    na, nb = xa.size, xb.size
    out = {
        "n_a": na,
        "n_b": nb,
        "mean_a": float(xa.mean()) if na else None,
        "mean_b": float(xb.mean()) if nb else None,
        "difference": None if difference is None else float(difference),
        "sd": None,
        "effect_size": None,
        "alpha": float(alpha),
        "power": float(power),
        "seeds_needed": None,
        "min_detectable_difference": None,
        "current_power": None,
        "method": POWER_METHOD,
        "text": "",
        "reason": None,
    }
    if out["difference"] is None and na and nb:
        out["difference"] = out["mean_a"] - out["mean_b"]
    if na < MIN_SEEDS or nb < MIN_SEEDS:
        short = " and ".join(f"{name} has {_seeds(n)}" for name, n in (("a", na), ("b", nb)) if n < MIN_SEEDS)
        out["reason"] = f"{short}; a seed-to-seed SD needs at least {MIN_SEEDS} seeds per method"
        out["text"] = f"no power analysis: {out['reason']}."
        return out

    sd = math.sqrt(((na - 1) * xa.var(ddof=1) + (nb - 1) * xb.var(ddof=1)) / (na + nb - 2))
    size = abs(out["difference"])
    out["sd"] = sd
    pct = f"{power * 100:g}%"

    if sd == 0:
        # Seeds that agree exactly leave no noise to power against: any nonzero difference
        # is detected with the fewest seeds a t-test can run on.
        out["min_detectable_difference"] = 0.0
        if size > 0:
            out.update(effect_size=math.inf, seeds_needed=MIN_SEEDS, current_power=1.0)
        else:
            out["reason"] = "the difference is 0, so no number of seeds detects it"
        out["text"] = (
            f"the seeds agree exactly (SD 0), so a difference of {_fmt(size)} is detected with "
            f"{MIN_SEEDS} seeds per method."
            if size > 0
            else "the seeds agree exactly and the difference is 0, so there is nothing to detect."
        )
        return out

    effect = size / sd
    out["effect_size"] = effect
    out["current_power"] = _power(effect, na, nb, alpha)

    # Power rises with the standardised difference; bracket the target, then solve.
    hi = 1.0
    while _power(hi, na, nb, alpha) < power and hi < 1e6:
        hi *= 2
    from scipy.optimize import brentq

    d_min = brentq(lambda d: _power(d, na, nb, alpha) - power, 0.0, hi, xtol=1e-10)
    out["min_detectable_difference"] = float(d_min * sd)

    if size == 0:
        out["reason"] = "the difference is 0, so no number of seeds detects it"
    elif _power(effect, max_seeds, max_seeds, alpha) < power:
        out["reason"] = f"more than max_seeds={max_seeds} seeds per method would be needed"
    else:
        lo_n, hi_n = MIN_SEEDS, max_seeds
        while lo_n < hi_n:
            mid = (lo_n + hi_n) // 2
            if _power(effect, mid, mid, alpha) >= power:
                hi_n = mid
            else:
                lo_n = mid + 1
        out["seeds_needed"] = lo_n

    needed = (f"needs {out['seeds_needed']} seeds per method" if out["seeds_needed"] is not None
              else f"cannot be planned ({out['reason']})")
    out["text"] = (
        f"with a seed-to-seed SD of {_fmt(sd)}, detecting a difference of {_fmt(size)} with {pct} power "
        f"at alpha {alpha:g} {needed}; the current {na} and {nb} seeds detect "
        f"{_fmt(out['min_detectable_difference'])} and have {out['current_power'] * 100:.0f}% power "
        f"against {_fmt(size)}."
    )
    return out
