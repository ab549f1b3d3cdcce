"""Everything the report shows, gathered as plain data: the run folder read back, the
verdict's tests and sentences, the tables and the diagnostics sections. The rendering
(``render``) draws the figures from it and writes it out."""

from __future__ import annotations

import time
from pathlib import Path

from .comparisons import _comparisons, _power, _ranking
from .compute import compute_section
from .diagnostic_sections import _bon_against, _overoptimisation, _pairs_quality
from .formatting import NAMES
from .reading import (_best_of_n, _cost_rows, _evaluated_points, _histories, _kl_controllers, _prompts,
                      _report_config, _status)
from .tables import _alignment_tax, _lm_eval_rows, _method_rows, _ranking_rows, _win_rows
from .verdict import (INCOMPLETE, SCOPE, _incomplete_line, _kl_measure, _left_out_line, _missing_text, _power_text,
                      _verdict_lines)


def build(root: Path, report_cfg: dict | None = None) -> dict:
    """Everything the report shows, as plain data (also written to ``report/report.json``)."""
    report_cfg = report_cfg or _report_config(root)
    status = _status(root)
    points = _evaluated_points(root)
    ref = next((p for p in points if p["method"] == "sft"), None)
    if ref is None:
        from ...errors import DataError

        missing = "" if status["complete"] else f" ({_missing_text(status)})"
        raise DataError(f"{root}: no evaluated SFT reference under eval/ for the run's recipe{missing}; finish the "
                        "run first (the same `trl-plus compare` command resumes it)")
    budget = report_cfg.get("kl_budget")
    excluded = [{"id": p["id"], "reason": "no KL estimate"} for p in points if p["method"] != "sft" and p.get("kl") is None]
    # the arms: the pipeline's own in their usual order, then the other trainer kinds by name
    methods = sorted({p["method"] for p in points if p["method"] != "sft"}, key=lambda m: (list(NAMES).index(m)
                     if m in NAMES else 99, m))
    cmp_list = _comparisons(points, methods, budget)
    primary = cmp_list[0] if cmp_list else None
    ranking = _ranking(points, methods, budget)
    lines = _verdict_lines(cmp_list, methods, excluded, budget, ranking)
    compute = compute_section(points, cmp_list, methods)  # matched compute, beside matched KL
    lines.extend(compute["lines"])
    if not status["complete"]:
        lines.insert(0, _incomplete_line(status))
    if status["left_out"]:
        lines.append(_left_out_line(status["left_out"]))
    from ..config import MIN_EFFECT

    min_effect = report_cfg.get("min_effect") or MIN_EFFECT
    power = _power({**primary["gold"], "a": primary["a"], "b": primary["b"]}, min_effect) if primary else None
    power_text = _power_text(power)
    bon = _best_of_n(root)
    bon_lines = _bon_against(bon, cmp_list)
    over = _overoptimisation(points, ref)
    quality = _pairs_quality(root)
    costs = _cost_rows(root)
    lm_rows = _lm_eval_rows(points)
    prompts = _prompts(root)
    methods_table = []
    for cmp in cmp_list:
        for row in _method_rows(cmp["gold"], ref.get("gold")):
            if row["method"] not in {r["method"] for r in methods_table}:
                methods_table.append({**row, "kl_range": cmp["gold"].get("kl_range")})
    title = report_cfg.get("title", "PPO vs DPO")
    return {
        "title": title if status["complete"] else f"{INCOMPLETE}: {title}",
        "complete": status["complete"],
        "status": status,
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "run_dir": str(root.resolve()),
        "budget": budget,
        "reference": {"mean": ref.get("gold"), "ci": ref.get("gold_ci"), "stderr": ref.get("gold_stderr"),
                      "val": ref.get("gold_val")},
        "methods": methods_table,
        "arms": methods,
        "ranking": ranking,
        "ranking_table": _ranking_rows(ranking, ref.get("gold")),
        "comparisons": cmp_list,
        "compute": compute,
        "verdict": lines,
        "scope": SCOPE,
        "power": power,
        "power_text": power_text,
        "best_of_n": bon,
        "best_of_n_lines": bon_lines,
        "overoptimisation": over["result"] if over else None,
        "preference_quality": quality,
        "prompts": prompts,
        "excluded": excluded,
        "kl_measure": _kl_measure(points),
        "points": [{k: v for k, v in p.items() if not k.endswith("per_prompt") and k not in ("lm_eval", "examples")}
                   for p in points],
        "win_rates": _win_rows(points),
        "lm_eval": lm_rows,
        "alignment_tax": _alignment_tax(lm_rows),
        "costs": costs,
        "total": {"wall_time_s": sum(r["wall_time_s"] for r in costs),  # all sessions of a resumed run
                  "peak_rss_mb": max([r["peak_rss_mb"] for r in costs] + [0]),
                  "tokens": sum(r["tokens"] for r in costs)},
        "examples": {p["id"]: p.get("examples", []) for p in points if p.get("final")},
        "histories": _histories(root),
        "kl_controllers": _kl_controllers(root),
        "_points_full": points,
        "_over_inputs": over,
    }
