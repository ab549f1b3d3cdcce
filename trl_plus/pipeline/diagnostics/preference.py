"""The quality of the preference pairs a run trained on: length bias, duplicates, identical
pairs and gold margins, and the reward model's agreement with the gold reward on held-out
pairs."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

from ...eval.stats import wilson_interval
from .values import num

GOLD_MARGIN_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_LISTED_ROWS = 200  # row indices listed per finding; the counts are always complete


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
        vals = [num(v) for v in (rc, rr, gc, gr)]
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
        c, rj = num(r.get("chosen_reward")), num(r.get("rejected_reward"))
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
