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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from trl_plus.errors import DataError

SFT = "sft"
GRID_POINTS = 200
MIN_SEEDS = 2
METHOD = "Welch's t over per-seed averages of fitted reward-KL curves"
ESTIMATOR = ("per-seed least-squares fit of reward - reward(SFT) = alpha*d - beta*d*log(d), d = sqrt(KL), "
             "averaged over the compared KL range")
POWER_METHOD = "two-sided Welch t-test (the verdict's test), seed SD pooled over both methods"


@dataclass
class _Point:
    index: int
    ident: object
    method: str
    seed: object
    kl: float
    test: float
    select: float | None = None
    place: float | None = None


@dataclass
class _SeedCurve:
    """One seed's fitted curve: ``coef`` over the basis of :func:`_basis`, ``start`` and
    ``reach`` its first and last checkpoint's KL, ``best`` the KL where the curve it holds
    beyond ``reach`` was chosen."""

    seed: object
    coef: np.ndarray
    anchored: bool
    origin: float
    start: float
    reach: float
    best: float
    idents: list = field(default_factory=list)

    def __call__(self, kl) -> np.ndarray:
        kl = np.asarray(kl, dtype=float)
        lo = 0.0 if self.anchored else self.start
        inside = _basis(np.clip(kl, lo, self.reach), self.anchored, self.coef.size) @ self.coef
        held = float((_basis(np.array([self.best]), self.anchored, self.coef.size) @ self.coef)[0])
        return self.origin + np.where(kl > self.reach, held, inside)

    def average(self, lo: float, hi: float) -> float:
        """Exact mean of the curve over [lo, hi], from the basis' antiderivatives."""
        floor = 0.0 if self.anchored else self.start
        total = 0.0
        a, b = max(lo, floor), min(hi, self.reach)
        if lo < floor:  # an unanchored curve is flat below its first checkpoint
            total += (min(hi, floor) - lo) * float(self(np.array([floor]))[0])
        if b > a:
            total += float((_antiderivative(b, self.anchored, self.coef.size)
                            - _antiderivative(a, self.anchored, self.coef.size)) @ self.coef) + self.origin * (b - a)
        if hi > self.reach:
            total += (hi - max(lo, self.reach)) * float(self(np.array([self.reach + 1.0]))[0])
        return total / (hi - lo)

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
    kept: list[tuple[_Point, np.ndarray | None, Mapping, bool]] = []
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
        has_kl_val = "kl_val" in p
        kl_val = _kl(p.get("kl_val"), label) if has_kl_val else None
        if method == SFT:
            kl_val = 0.0 if has_kl_val else None  # the origin is KL 0 on every prompt set
        elif has_kl_val and (kl_val is None or not math.isfinite(kl_val)):
            excluded.append({**entry, "reason": f"kl_val is {kl_val} (no validation KL estimate)"})
            continue
        point = _Point(i, ident, method, seed, kl, test, place=kl if kl_val is None else kl_val)
        kept.append((point, arrays.get("gold_val"), p, has_kl_val))

    with_val = [k for k in kept if k[1] is not None]
    use_val = bool(with_val)
    if use_val and len(with_val) != len(kept):
        lacking = next(k for k in kept if k[1] is None)
        having = _label(with_val[0][2], with_val[0][0].index)
        raise DataError(
            f"{_label(lacking[2], lacking[0].index)}: has no gold_val while {having} has one; the "
            "frontier is chosen by one score for every point, so give gold_val to all or none"
        )
    trained = [k for k in kept if k[0].method != SFT]
    with_kl_val = [k for k in trained if k[3]]
    use_kl_val = bool(with_kl_val)
    if use_kl_val and len(with_kl_val) != len(trained):
        lacking = next(k for k in trained if not k[3])
        having = _label(with_kl_val[0][2], with_kl_val[0][0].index)
        raise DataError(
            f"{_label(lacking[2], lacking[0].index)}: has no kl_val while {having} has one; the fits place "
            "every checkpoint by one KL, so give kl_val to all trained points or to none"
        )
    out: list[_Point] = []
    for pt, val, _, _ in kept:
        if use_val:
            pt.select = _mean(val)
            if pt.select is None:
                excluded.append({"point": pt.ident, "method": pt.method, "seed": pt.seed,
                                 "reason": "no valid gold_val score (every validation prompt failed)"})
                continue
        else:
            pt.select = pt.test
        out.append(pt)
    return out, excluded, use_val, use_kl_val


def _basis(kl: np.ndarray, anchored: bool, size: int) -> np.ndarray:
    """Columns d, -d log d (and a leading 1 without an SFT anchor), d = sqrt(KL); the first
    ``size`` of them, so a seed with fewer checkpoints than parameters fits fewer."""
    d = np.sqrt(np.maximum(np.asarray(kl, dtype=float), 0.0))
    safe = np.where(d > 0, d, 1.0)
    cols = [d, np.where(d > 0, -d * np.log(safe), 0.0)]
    if not anchored:
        cols.insert(0, np.ones_like(d))
    return np.stack(cols[:size], axis=-1)


def _antiderivative(kl: float, anchored: bool, size: int) -> np.ndarray:
    """Integrals from 0 to ``kl`` of the basis columns, in KL (not d)."""
    k = max(float(kl), 0.0)
    k32 = k**1.5
    cols = [2.0 / 3.0 * k32, (-(math.log(k) / 3.0) + 2.0 / 9.0) * k32 if k > 0 else 0.0]
    if not anchored:
        cols.insert(0, k)
    return np.array(cols[:size])


def _fit(x: np.ndarray, y: np.ndarray, anchored: bool) -> np.ndarray:
    size = min(2 if anchored else 3, x.size)
    coef, *_ = np.linalg.lstsq(_basis(x, anchored, size), y, rcond=None)
    return coef


def _curve(seed, points: list[_Point], origin: _Point | None, use_val: bool) -> _SeedCurve:
    anchored = origin is not None
    place = np.array([p.place for p in points])
    test = np.array([p.test for p in points]) - (origin.test if anchored else 0.0)
    coef = _fit(place, test, anchored)
    start = min(p.kl for p in points)
    reach = max(p.kl for p in points)
    # Where this seed's curve is best, for the value it holds past its last checkpoint:
    # chosen on the validation fit when there is one, so a lucky test score cannot pick it.
    if use_val:
        chooser = _fit(place, np.array([p.select for p in points]) - (origin.select if anchored else 0.0), anchored)
    else:
        chooser = coef
    xs = np.linspace(0.0 if anchored else start, reach, 401)
    best = float(xs[int(np.argmax(_basis(xs, anchored, chooser.size) @ chooser))])
    idents = [p.ident for p in points]
    return _SeedCurve(seed, coef, anchored, origin.test if anchored else 0.0, start, reach, best, idents)


def _welch(xa: np.ndarray, xb: np.ndarray, confidence: float):
    from scipy import stats

    na, nb = xa.size, xb.size
    diff = float(xa.mean() - xb.mean())
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    se2 = va + vb
    if se2 > 0:
        df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
        half = float(stats.t.ppf((1 + confidence) / 2, df) * math.sqrt(se2))
        p = float(2 * stats.t.sf(abs(diff) / math.sqrt(se2), df))
    else:
        df, half = float(na + nb - 2), 0.0
        p = 1.0 if diff == 0 else 0.0
    return diff, [diff - half, diff + half], float(df), p


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
      ``{method: {seed: curve average}}``; pass its values to :func:`power_analysis` to
      plan how many seeds a conclusive comparison needs.
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

    usable, excluded, use_val, use_kl_val = _parse(points, a, b)
    origins = [p for p in usable if p.method == SFT]
    origin = None
    if origins:
        origin = _Point(origins[0].index, origins[0].ident, SFT, None, 0.0,
                        float(np.mean([p.test for p in origins])), float(np.mean([p.select for p in origins])), 0.0)
    origin_idents = [p.ident for p in origins]

    curves_by_method: dict[str, list[_SeedCurve]] = {}
    for m in (a, b):
        by_seed: dict = {}
        for p in usable:
            if p.method == m:
                by_seed.setdefault(p.seed, []).append(p)
        try:
            seeds = sorted(by_seed)
        except TypeError:
            seeds = list(by_seed)
        curves_by_method[m] = [_curve(s, by_seed[s], origin, use_val) for s in seeds]

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

    diff, ci, df, p = _welch(xa, xb, confidence)
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


@functools.lru_cache(maxsize=256)
def _variance_draws(n1: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed draws of the two sample variances (in units of the true variance), so that
    power is a smooth, reproducible function of the effect."""
    rng = np.random.default_rng(20_240_611)
    return rng.chisquare(n1 - 1, 20_000) / (n1 - 1), rng.chisquare(n2 - 1, 20_000) / (n2 - 1)


def _power(effect: float, n1: float, n2: float, alpha: float) -> float:
    """Power of the two-sided Welch t-test (the test ``compare_frontiers`` runs) against a
    standardised difference ``effect``, with equal true spreads.

    Given the two sample variances, the mean difference is normal and independent of
    them, so the rejection probability is two normal tails; it is averaged over fixed
    draws of the variances. A pooled-t formula would overstate the power of Welch's
    test with few seeds (0.80 claimed against 0.69 simulated with 3 seeds per method)."""
    from scipy import stats

    u1, u2 = _variance_draws(int(n1), int(n2))
    v1, v2 = u1 / n1, u2 / n2
    se = np.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    crit = stats.t.ppf(1 - alpha / 2, df) * se
    sd = math.sqrt(1 / n1 + 1 / n2)
    reject = stats.norm.cdf((effect - crit) / sd) + stats.norm.cdf((-effect - crit) / sd)
    return float(min(1.0, reject.mean()))


def power_by_seeds(sd: float, difference: float, alpha: float = 0.05, seeds=range(2, 21)) -> list[dict]:
    """``[{"seeds": n, "power": p}]``: the power of the verdict's Welch test to detect
    ``difference`` with ``n`` seeds per method and a seed SD of ``sd``; ``[]`` when either
    is missing or ``sd`` is not positive. The same computation as :func:`power_analysis`,
    so a plot of it agrees with the planned seed count."""
    if not sd or difference is None or not math.isfinite(sd) or not math.isfinite(difference) or sd <= 0:
        return []
    return [{"seeds": n, "power": _power(abs(difference) / sd, n, n, alpha)} for n in seeds if n >= MIN_SEEDS]


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
        The effect to plan for: the smallest true difference that matters, in reward
        units, stated before looking at the data (the report takes it from
        ``report.min_effect``). Only its size matters. Without it no number of seeds is
        planned: planning on the observed difference (post-hoc power) only restates the
        p-value, and with no true difference it asks for anywhere from a few seeds to
        hundreds.
    alpha:
        Two-sided significance level.
    power:
        The wanted probability of detecting ``difference``.
    max_seeds:
        The largest per-method seed count searched.

    Method
    ------
    The seed-to-seed SD is pooled over both methods. Power is that of the two-sided
    Welch t-test that ``compare_frontiers`` runs, with equal true spreads: the rejection
    probability given the two sample variances (two normal tails), averaged over fixed
    draws of those variances, so it accounts for Welch's smaller degrees of freedom with
    few seeds. The plan is a guide: the observed SD from few seeds is itself uncertain.

    Returns
    -------
    dict with ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``difference`` (the stated
    effect, or None), ``observed_difference`` (``mean(a) - mean(b)``, shown, never planned
    on), ``sd`` (pooled seed SD), ``effect_size`` (``|difference| / sd``), ``alpha``,
    ``power``, ``seeds_needed`` (seeds per method, equal for both, for the wanted power;
    None when no effect is stated, the effect is 0 or more than ``max_seeds`` would be
    needed),
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
        "observed_difference": float(xa.mean() - xb.mean()) if na and nb else None,
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
    if na < MIN_SEEDS or nb < MIN_SEEDS:
        short = " and ".join(f"{name} has {_seeds(n)}" for name, n in (("a", na), ("b", nb)) if n < MIN_SEEDS)
        out["reason"] = f"{short}; a seed-to-seed SD needs at least {MIN_SEEDS} seeds per method"
        out["text"] = f"no power analysis: {out['reason']}."
        return out

    sd = math.sqrt(((na - 1) * xa.var(ddof=1) + (nb - 1) * xb.var(ddof=1)) / (na + nb - 2))
    stated = out["difference"] is not None
    size = abs(out["difference"]) if stated else 0.0
    out["sd"] = sd
    pct = f"{power * 100:g}%"

    if not stated:
        out["reason"] = "no effect stated to plan for (give the smallest difference that matters)"
        if sd == 0:
            out["min_detectable_difference"] = 0.0
            out["text"] = "the seeds agree exactly (SD 0), so any nonzero difference is detected; no effect stated."
            return out

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
    if stated:
        out["effect_size"] = effect
        out["current_power"] = _power(effect, na, nb, alpha)

    # Power rises with the standardised difference; bracket the target, then solve.
    hi = 1.0
    while _power(hi, na, nb, alpha) < power and hi < 1e6:
        hi *= 2
    from scipy.optimize import brentq

    d_min = brentq(lambda d: _power(d, na, nb, alpha) - power, 0.0, hi, xtol=1e-10)
    out["min_detectable_difference"] = float(d_min * sd)

    if not stated:
        out["text"] = (
            f"with a seed-to-seed SD of {_fmt(sd)}, the current {na} and {nb} seeds detect a true difference of "
            f"{_fmt(out['min_detectable_difference'])} with {pct} power at alpha {alpha:g}; no effect was stated, "
            "so no number of seeds is planned."
        )
        return out
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
