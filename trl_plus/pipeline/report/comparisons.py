"""The verdict's tests: every pair of arms at matched KL on gold reward and on the win rate
against SFT (``trl_plus.eval.compare_frontiers``), each arm against DPO first, the family of
all those tests under Holm's correction, the ranking of the arms over the KL range all of
them reach (``trl_plus.eval.rank_frontiers``), and the power of the headline test for the
stated effect."""

from __future__ import annotations

from .formatting import NAMES


def _frontier_inputs(points: list[dict], value: str, budget: float | None) -> list[dict]:
    """The points as ``compare_frontiers`` takes them: ``gold`` holds the per-prompt test
    values of ``value`` (gold reward or win score), ``gold_val`` the validation gold
    reward that chooses the frontier."""
    out = []
    for p in points:
        values = p.get(value)
        if values is None:
            continue
        if budget is not None and p["method"] != "sft" and p.get("kl") is not None and p["kl"] > budget + 1e-9:
            continue
        kl = p.get("kl")
        # A Monte-Carlo KL of a barely-moved checkpoint can dip below 0; the true KL cannot.
        row = {"id": p["id"], "method": p["method"], "seed": p["seed"], "run": p["run"], "step": p["step"],
               "kl": None if kl is None else max(0.0, kl), "gold": values}
        if p.get("gold_val_per_prompt") is not None:
            row["gold_val"] = p["gold_val_per_prompt"]
        if "kl_val" in p and p["method"] != "sft":
            row["kl_val"] = None if p["kl_val"] is None else max(0.0, p["kl_val"])
        out.append(row)
    if not all("kl_val" in r for r in out if r["method"] != "sft"):
        for r in out:
            r.pop("kl_val", None)
    return out


def _sft_win_scores(points: list[dict]) -> list[dict]:
    """The SFT model against itself wins half: its per-prompt win score is 0.5."""
    out = []
    n = next((len(p["win_per_prompt"]) for p in points if p.get("win_per_prompt")), 0)
    for p in points:
        if p["method"] == "sft" and n:
            p = {**p, "win_per_prompt": [0.5] * n}
        out.append(p)
    return out


def _pairs(methods: list[str]) -> list[tuple[str, str]]:
    """Every pair of arms, once each: every other arm against DPO first (the DPO paper's
    controlled comparison, DPO second), then the remaining pairs in the arms' order."""
    others = [m for m in methods if m != "dpo"]
    against_dpo = [(m, "dpo") for m in others] if "dpo" in methods else []
    return against_dpo + [(a, b) for i, a in enumerate(others) for b in others[i + 1:]]


def _comparisons(points: list[dict], methods: list[str], budget: float | None) -> list[dict]:
    """Every pair of arms (:func:`_pairs`), on gold reward and on the win rate against SFT,
    both through ``compare_frontiers``; then the family of all these tests under Holm's
    correction (:func:`_family`)."""
    from ...eval import compare_frontiers

    out = []
    for a, b in _pairs(methods):
        gold = compare_frontiers(_frontier_inputs(points, "gold_per_prompt", budget), a, b, names=NAMES)
        win_points = _frontier_inputs(_sft_win_scores(points), "win_per_prompt", budget)
        win = compare_frontiers(win_points, a, b, names=NAMES, quantity="win rate against SFT") if any(
            p["method"] == a for p in win_points) and any(p["method"] == b for p in win_points) else None
        out.append({"a": a, "b": b, "gold": gold, "win_rate": win})
    _family(out)
    return out


def _ranking(points: list[dict], methods: list[str], budget: float | None) -> dict | None:
    """The arms ranked by mean gold reward over the KL range all of them reach, with a t
    interval over seeds each (``rank_frontiers``); None with fewer than two arms."""
    from ...eval import rank_frontiers

    if len(methods) < 2:
        return None
    return rank_frontiers(_frontier_inputs(points, "gold_per_prompt", budget), methods, names=NAMES)


def _family(cmp_list: list[dict], alpha: float = 0.05) -> None:
    """Mark each headline test with its Holm-adjusted p-value and the family's size, and
    downgrade a test that is significant alone but not in the family: its interval still
    excludes 0, but with several tests one such interval is expected by chance."""
    from ...eval import holm

    tests = [c[key] for c in cmp_list for key in ("gold", "win_rate") if c.get(key) and c[key].get("p_value") is not None]
    adjusted = holm([t["p_value"] for t in tests])
    for t, p in zip(tests, adjusted):
        alone = t["status"]
        t.update(family_size=len(tests), holm_p=p, significant_alone=alone == "significant")
        if alone == "significant" and p > alpha:
            names = [NAMES.get(t["a"], t["a"]), NAMES.get(t["b"], t["b"])]
            rest = t["text"].split(": ", 1)[1] if ": " in t["text"] else t["text"]
            t.update(status="not significant", winner=None,
                     text=f"no winner between {names[0]} and {names[1]} at matched KL once the {len(tests)} headline "
                          f"tests are taken together: {rest}")


def _power(cmp: dict, min_effect: float) -> dict | None:
    """Power of the verdict's test, planned for the stated ``min_effect`` (report.min_effect),
    never for the observed difference."""
    from ...eval import power_analysis, power_by_seeds

    per_seed = cmp.get("per_seed") or {}
    a, b = cmp["a"], cmp["b"]
    va = [v for v in (per_seed.get(a) or {}).values() if v is not None]
    vb = [v for v in (per_seed.get(b) or {}).values() if v is not None]
    result = power_analysis(va, vb, difference=min_effect)
    result["curve"] = power_by_seeds(result.get("sd"), min_effect)
    result["current_seeds"] = min(len(va), len(vb))
    result["min_effect"] = min_effect
    return result
