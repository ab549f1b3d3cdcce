"""The report's diagnostics sections: reward over-optimisation of the PPO runs, each
method's frontier against the best-of-n baseline, and the quality of the preference
pairs (the analyses themselves are ``pipeline.diagnostics``)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .formatting import NAMES
from .reading import _preference_pairs


def _overoptimisation(points: list[dict], ref: dict) -> dict | None:
    from ..diagnostics import overoptimisation

    runs = defaultdict(list)
    for p in points:
        if p["method"] == "ppo" and p.get("proxy") is not None:
            runs[p["run"]].append({"step": p["step"], "kl": p.get("kl"), "gold": p.get("gold"), "proxy": p["proxy"],
                                   "gold_stderr": p.get("gold_stderr")})
    if not runs:
        return None
    inputs = [{"run": run, "method": "ppo", "points": sorted(pts, key=lambda q: q["step"])} for run, pts in sorted(runs.items())]
    # The SFT point keeps its standard error: every SFT-to-checkpoint fall is judged against
    # the noise of both ends, not a fixed tolerance.
    sft = ({"gold": ref.get("gold"), "proxy": ref.get("proxy"), "gold_stderr": ref.get("gold_stderr")}
           if ref.get("proxy") is not None else None)
    return {"result": overoptimisation(inputs, sft=sft), "runs": inputs, "sft": sft}


def _bon_against(bon: dict | None, cmp_list: list[dict]) -> list[str]:
    """Each method's frontier minus best-of-n at best-of-n's KLs inside the compared range,
    with a t interval over seeds when the comparison carries per-seed curves
    (``diagnostics.best_of_n_against``); the rows are also kept as ``bon["comparisons"]``."""
    from ..diagnostics import best_of_n_against

    if not bon or not cmp_list:
        return []
    rows, seen = [], set()
    for cmp in cmp_list:
        g = cmp["gold"]
        found = best_of_n_against(bon, g.get("grid"), g.get("curves") or {}, g.get("seed_curves"), names=NAMES,
                                  confidence=g.get("confidence") or 0.95, skip=seen)
        seen.update(r["method"] for r in found)
        rows += found
    bon["comparisons"] = rows
    return [r["text"] for r in rows]


def _pairs_quality(root: Path) -> dict | None:
    from ..diagnostics import preference_quality

    found = _preference_pairs(root)
    if found is None:
        return None
    pairs, heldout = found
    return preference_quality(pairs, heldout=heldout)
