"""Each seed's reward-KL curve: the least-squares fit of Gao et al.'s (2022) form through
the SFT origin, ``reward - reward(SFT) = alpha * d - beta * d * log(d)`` with
``d = sqrt(KL)``, to every checkpoint of the seed, held at its best value past the last
checkpoint, and averaged exactly over a KL range (see :mod:`trl_plus.eval.frontier` for
why this shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .frontier_inputs import Point


@dataclass
class SeedCurve:
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


def seed_curve(seed, points: list[Point], origin: Point | None, use_val: bool) -> SeedCurve:
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
    return SeedCurve(seed, coef, anchored, origin.test if anchored else 0.0, start, reach, best, idents)


def seed_curves(points: list[Point], methods, origin: Point | None, use_val: bool) -> dict[str, list[SeedCurve]]:
    """Each method's per-seed fitted curves, from every one of its points, seeds in order."""
    curves = {}
    for method in methods:
        by_seed: dict = {}
        for p in points:
            if p.method == method:
                by_seed.setdefault(p.seed, []).append(p)
        try:
            seeds = sorted(by_seed)
        except TypeError:  # seeds of mixed types: in the order they came
            seeds = list(by_seed)
        curves[method] = [seed_curve(s, by_seed[s], origin, use_val) for s in seeds]
    return curves
