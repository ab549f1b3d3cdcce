"""The points :func:`~trl_plus.eval.compare_frontiers` compares, checked: one evaluated
checkpoint per dict (method, seed, KL, per-prompt gold rewards, optionally validation
scores and a validation KL), validated with errors that name the point, and the points
that cannot enter a fit set aside with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trl_plus.errors import DataError

SFT = "sft"


@dataclass
class Point:
    """One usable checkpoint: ``test`` its mean gold reward, ``kl`` the KL every reported
    number uses, ``place`` the KL its fit uses (``kl_val`` when given), ``select`` the
    score that chooses where its seed's curve is best."""

    index: int
    ident: object
    method: str
    seed: object
    kl: float
    test: float
    select: float | None = None
    place: float | None = None


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


def parse_points(points, *methods: str):
    """Validated points of ``methods`` (two for a comparison, any number for a ranking)
    and SFT, and the ones left out with why."""
    if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Sequence):
        raise DataError(f"points must be a list of dicts, got {type(points).__name__}")
    kept: list[tuple[Point, np.ndarray | None, Mapping, bool]] = []
    excluded: list[dict] = []
    lengths: dict[str, tuple[int, str]] = {}
    for i, p in enumerate(points):
        if not isinstance(p, Mapping):
            raise DataError(f"point {i}: expected a dict, got {type(p).__name__}")
        label = _label(p, i)
        if "method" not in p:
            raise DataError(f"{label}: has no 'method'")
        method = p["method"]
        if method not in (*methods, SFT):
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
        point = Point(i, ident, method, seed, kl, test, place=kl if kl_val is None else kl_val)
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
    out: list[Point] = []
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
