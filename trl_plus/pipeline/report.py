"""The comparison report: ``report.md`` and a self-contained ``report.html``.

Everything is read back from the run folder (eval results, trainer states, stage
markers), so ``trl-plus report RUN_DIR`` re-renders it without the recipe's models.

The verdict is ``trl_plus.eval.compare_frontiers``: each seed's reward-vs-KL frontier
(checkpoints chosen on the validation prompts, numbers from the test prompts) averaged
over the KL range every seed of both methods covers, one number per seed, Welch's t over
seeds. The frontier plot draws exactly those frontiers, so the two cannot disagree.
"""

from __future__ import annotations

import base64
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path

from . import plots
from .rundir import DONE, fingerprint, read_json, write_json

NAMES = {"ppo": "PPO (reward model)", "ppo_gt": "PPO (gold reward)", "dpo": "DPO", "sft": "SFT",
         "best_of_n": "best-of-n (SFT + reward model)"}
TEMPLATE = "report.html.j2"
RL_METHODS = ("ppo", "ppo_gt")


def run_report(ctx) -> Path:
    fp = fingerprint("report", ctx.fingerprints.get("eval"), ctx.config.report.model_dump(), time.time())
    with ctx.bar("report", 1) as bar:
        folder = render_report(ctx.run.root, report_cfg=ctx.config.report.model_dump())
        bar.update(1)
    write_json(folder / DONE, {"fingerprint": fp, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return folder


def _fmt(x, digits: int = 3) -> str:
    if not isinstance(x, (int, float)) or (isinstance(x, float) and math.isnan(x)):
        return "n/a"  # None, or a key the template found missing
    return f"{x:.{digits}f}"


def _ci(ci, digits: int = 3) -> str:
    return f"[{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]" if ci else "n/a"


def _signed(x, digits: int = 3) -> str:
    return f"{x:+.{digits}f}" if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)) else "n/a"


def _histories(root: Path) -> dict:
    out = {}
    for state in sorted(root.glob("*/*/trainer_state.json")):
        method = state.parent.parent.name
        if method in NAMES:
            out[f"{method}/{state.parent.name}"] = (method, read_json(state, {}).get("log_history", []))
    return out


def _cost_rows(root: Path) -> list[dict]:
    """Wall time, peak memory and tokens per stage (sweep runs and eval checkpoints summed)."""
    agg: dict[str, dict] = defaultdict(lambda: {"wall_time_s": 0.0, "peak_rss_mb": 0.0, "tokens": 0, "steps": 0})
    for marker in root.rglob(DONE):
        rel = marker.parent.relative_to(root).parts
        if not rel or rel[0] == "report" or rel[-1] == "summary" or (len(rel) > 1 and rel[-1] == "val"):
            continue
        info = read_json(marker, {})
        if "wall_time_s" not in info:
            continue
        stage = rel[0] if rel[0] in ("corpus", "sft", "pairs", "reward", "eval") else "/".join(rel[:2])
        row = agg[stage]
        row["wall_time_s"] += info.get("wall_time_s") or 0.0
        row["peak_rss_mb"] = max(row["peak_rss_mb"], info.get("peak_rss_mb") or 0.0)
        row["tokens"] += info.get("tokens") or 0
        row["steps"] += 1
    order = ["corpus", "sft", "pairs", "reward"]
    keys = sorted(agg, key=lambda k: (order.index(k) if k in order else (5 if k != "eval" else 9), k))
    return [{"stage": k, **agg[k]} for k in keys]


# -- the verdict --------------------------------------------------------------------------


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
        out.append(row)
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


def _t_interval(values: list[float], confidence: float = 0.95) -> dict:
    """Mean of per-seed numbers with a t interval over seeds (None with fewer than two)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n if n else None
    if n < 2:
        return {"mean": mean, "ci": None, "seeds": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci": [mean - half, mean + half], "seeds": n, "sd": sd}


def _method_rows(cmp: dict, reference: float | None) -> list[dict]:
    rows = []
    for method, per_seed in (cmp.get("per_seed") or {}).items():
        values = [v for v in per_seed.values() if v is not None]
        iv = {**_t_interval(values), "seeds": (cmp.get("seeds") or {}).get(method, len(values))}
        rows.append({"method": method, **iv, "seed_values": values,
                     "gain": None if iv["mean"] is None or reference is None else iv["mean"] - reference})
    return rows


def _kl_measure(points: list[dict]) -> dict | None:
    """How the trained checkpoints' KL was estimated: the estimators and samples per prompt
    used, and the median standard error, for the line under the frontier."""
    trained = [p for p in points if p["method"] != "sft" and p.get("kl") is not None]
    if not trained:
        return None
    errors = [p["kl_stderr"] for p in trained if isinstance(p.get("kl_stderr"), (int, float))
              and math.isfinite(p["kl_stderr"])]
    estimators = sorted({p.get("kl_estimator") or "sample" for p in trained})
    samples = sorted({p["kl_samples"] for p in trained if p.get("kl_samples")})
    median = statistics.median(errors) if errors else None
    counts = " or ".join(str(k) for k in samples) or "?"
    text = (f"KL, the x axis, is estimated too: for each of the {len(trained)} trained checkpoints by the "
            f"{' and '.join(estimators)} estimator from {counts} sample{'' if samples == [1] else 's'} per test prompt"
            + (f" (median standard error {median:.3f} nats)" if median is not None else "")
            + ". Its noise can move a checkpoint onto or off a frontier, and with it the verdict when the "
              "verdict's interval is near 0; eval.kl.num_samples buys a closer estimate.")
    return {"checkpoints": len(trained), "estimators": estimators, "samples": samples, "median_stderr": median,
            "text": text}


def _comparisons(points: list[dict], methods: list[str], budget: float | None) -> list[dict]:
    """Each RL method against DPO (the DPO paper's controlled comparison), on gold reward
    and on the win rate against SFT, both through ``compare_frontiers``."""
    from ..eval import compare_frontiers

    out = []
    if "dpo" not in methods:
        return out
    for rl in [m for m in RL_METHODS if m in methods]:
        gold = compare_frontiers(_frontier_inputs(points, "gold_per_prompt", budget), rl, "dpo", names=NAMES)
        win_points = _frontier_inputs(_sft_win_scores(points), "win_per_prompt", budget)
        win = compare_frontiers(win_points, rl, "dpo", names=NAMES, quantity="win rate against SFT") if any(
            p["method"] == rl for p in win_points) and any(p["method"] == "dpo" for p in win_points) else None
        out.append({"a": rl, "b": "dpo", "gold": gold, "win_rate": win})
    return out


def _power(cmp: dict) -> dict | None:
    from ..eval import power_analysis
    from .diagnostics import power_curve

    per_seed = cmp.get("per_seed") or {}
    a, b = cmp["a"], cmp["b"]
    va = [v for v in (per_seed.get(a) or {}).values() if v is not None]
    vb = [v for v in (per_seed.get(b) or {}).values() if v is not None]
    result = power_analysis(va, vb)
    sd, diff = result.get("sd"), cmp.get("difference")
    if diff is None and va and vb:
        diff = sum(va) / len(va) - sum(vb) / len(vb)
    result["curve"] = power_curve(sd, diff) if sd and diff else []
    result["current_seeds"] = min(len(va), len(vb))
    result["observed_difference"] = diff
    return result


def _power_text(power: dict | None) -> str | None:
    if not power:
        return None
    if power.get("reason") and power.get("seeds_needed") is None and power.get("min_detectable_difference") is None:
        return f"Power: {power['reason']}"
    need = power.get("seeds_needed")
    mdd = power.get("min_detectable_difference")
    n = power.get("current_seeds")
    diff = power.get("observed_difference")
    need_txt = ("more than 1000 seeds per method" if need is None or (isinstance(need, float) and math.isinf(need))
                else f"{need} seeds per method")
    return (f"Power: with the observed seed-to-seed spread (SD {_fmt(power.get('sd'))}), detecting the observed "
            f"difference of {_signed(diff)} at 80% power (two-sided, 5%) needs {need_txt}; with the current {n} per "
            f"method the smallest difference detectable at 80% power is {_fmt(mdd)} gold reward.")


# -- the other sections -------------------------------------------------------------------


def _win_rows(points: list[dict], frontier_ids: set[str]) -> list[dict]:
    """Win-rate rows: every trained checkpoint on a seed's frontier (the checkpoints the
    win-rate comparison uses), else (no frontier, or frontiers of the SFT point alone) each
    run's last."""
    judged = [p for p in points
              if p["method"] != "sft" and p.get("win_rate") and p["win_rate"].get("win_rate") is not None]
    chosen = [p for p in judged if p["id"] in frontier_ids] or [p for p in judged if p.get("final")]
    rows = []
    for p in chosen:
        w = p["win_rate"]
        kl = "n/a" if p.get("kl") is None else f"{p['kl']:.2f}"
        rows.append({"label": f"{NAMES.get(p['method'], p['method'])} {p['strength_key']}={p['strength']:g} "
                              f"seed {p['seed']} (step {p['step']}, KL {kl})",
                     "method": p["method"], "win_rate": w["win_rate"], "win_rate_ci": w["win_rate_ci"],
                     "lc_win_rate": w.get("lc_win_rate"), "lc_win_rate_ci": w.get("lc_win_rate_ci"),
                     "wins": w.get("wins"), "ties": w.get("ties"), "losses": w.get("losses")})
    return rows


def _margins(samples: list[dict]) -> dict:
    """Per item of a multiple-choice task: log-likelihood of the right choice minus the best
    wrong one (nats). Continuous where accuracy saturates, so small fluency losses show."""
    out = {}
    for item in samples or []:
        resp, target = item.get("response"), item.get("target")
        if not isinstance(resp, list) or not isinstance(target, int) or not 0 <= target < len(resp) or len(resp) < 2:
            continue
        lls = [r[0] if isinstance(r, (list, tuple)) else r for r in resp]
        if not all(isinstance(v, (int, float)) for v in lls):
            continue
        out[item.get("doc_id")] = lls[target] - max(v for i, v in enumerate(lls) if i != target)
    return out


def _paired(a: dict, b: dict) -> tuple[float | None, float | None, float | None]:
    """Mean of ``a``, and mean and standard error of ``a - b`` over the items both have."""
    ids = [i for i in a if i in b]
    if not ids:
        return (sum(a.values()) / len(a) if a else None), None, None
    d = [a[i] - b[i] for i in ids]
    mean = sum(d) / len(d)
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) if len(d) > 1 else None
    return sum(a[i] for i in ids) / len(ids), mean, se


def _lm_eval_rows(points: list[dict]) -> list[dict]:
    """Each task of the SFT model and of each run's last checkpoint: accuracy with its
    delta against SFT (analytic standard errors combined), and the mean log-likelihood
    margin of the right choice with its paired delta over the same items."""
    ref = next((p for p in points if p["method"] == "sft"), None)
    if not ref or not ref.get("lm_eval"):
        return []
    ref_results = ref["lm_eval"].get("results", {})
    ref_margins = {t: _margins(v) for t, v in (ref["lm_eval"].get("samples") or {}).items()}
    rows = []
    for p in [ref] + [p for p in points if p["method"] != "sft" and p.get("final") and p.get("lm_eval")]:
        samples = p["lm_eval"].get("samples") or {}
        for task, metrics in sorted(p["lm_eval"].get("results", {}).items()):
            for key, value in metrics.items():
                if not isinstance(value, (int, float)) or "_stderr" in key or key == "sample_len":
                    continue
                metric, _, filt = key.partition(",")
                se = metrics.get(f"{metric}_stderr,{filt}")
                se = se if isinstance(se, (int, float)) else None
                ref_v = ref_results.get(task, {}).get(key)
                ref_se = ref_results.get(task, {}).get(f"{metric}_stderr,{filt}")
                ref_se = ref_se if isinstance(ref_se, (int, float)) else None
                delta = None if p is ref or ref_v is None else value - ref_v
                delta_se = None if delta is None or se is None or ref_se is None else math.sqrt(se ** 2 + ref_se ** 2)
                margin, m_delta, m_se = _paired(_margins(samples.get(task)), ref_margins.get(task) or {})
                rows.append({"model": "SFT (reference)" if p is ref else f"{NAMES.get(p['method'], p['method'])} "
                                                                       f"{p['run'].split('/')[-1]}",
                             "method": p["method"], "task": task.replace("trl_plus_", ""), "metric": metric,
                             "value": value, "stderr": se, "delta": delta, "delta_stderr": delta_se,
                             "margin": margin, "margin_delta": None if p is ref else m_delta,
                             "margin_delta_stderr": None if p is ref else m_se})
    return rows


def _alignment_tax(rows: list[dict]) -> list[str]:
    """Per method and task: the paired margin delta averaged over its runs, with a t
    interval over runs (a run, not an item, is the unit of replication)."""
    acc = defaultdict(list)
    for r in rows:
        if r["margin_delta"] is not None:
            acc[(r["method"], r["task"])].append(r["margin_delta"])
    lines = []
    for (method, task), vals in sorted(acc.items()):
        iv = _t_interval(vals)
        head = f"{NAMES.get(method, method)}, {task}: log-likelihood margin {_signed(iv['mean'], 2)} nats against SFT"
        if iv["ci"] is None:
            lines.append(f"{head} (one run: no interval over runs).")
            continue
        lo, hi = iv["ci"]
        verdict = ("an alignment tax" if hi < 0 else "a gain in fluency" if lo > 0 else "no detectable change")
        lines.append(f"{head} (95% CI {_signed(lo, 2)} to {_signed(hi, 2)}, t over {len(vals)} runs): {verdict}.")
    return lines


def _overoptimisation(points: list[dict], ref: dict) -> dict | None:
    from .diagnostics import overoptimisation

    runs = defaultdict(list)
    for p in points:
        if p["method"] == "ppo" and p.get("proxy") is not None:
            runs[p["run"]].append({"step": p["step"], "kl": p.get("kl"), "gold": p.get("gold"), "proxy": p["proxy"],
                                   "gold_stderr": p.get("gold_stderr")})
    if not runs:
        return None
    inputs = [{"run": run, "method": "ppo", "points": sorted(pts, key=lambda q: q["step"])} for run, pts in sorted(runs.items())]
    sft = {"gold": ref.get("gold"), "proxy": ref.get("proxy")} if ref.get("proxy") is not None else None
    return {"result": overoptimisation(inputs, sft=sft), "runs": inputs, "sft": sft}


def _best_of_n(root: Path) -> dict | None:
    return read_json(root / "eval" / "best_of_n" / "best_of_n.json", None)


def _bon_against(bon: dict | None, cmp_list: list[dict]) -> list[str]:
    """Each method's mean frontier against best-of-n at the KLs both cover."""
    if not bon or not cmp_list:
        return []
    lines = []
    seen = set()
    for cmp in cmp_list:
        g = cmp["gold"]
        grid, curves = g.get("grid"), g.get("curves") or {}
        if not grid:
            continue
        for method, curve in curves.items():
            if method in seen or not curve:
                continue
            seen.add(method)
            diffs = []
            for q in bon.get("points", []):
                if q.get("gold") is None or not (grid[0] <= q["kl"] <= grid[-1]):
                    continue
                diffs.append((q["n"], _interp(grid, curve, q["kl"]) - q["gold"]))
            if diffs:
                parts = ", ".join(f"n={n}: {_signed(d)}" for n, d in diffs)
                verdict = ("above best-of-n at every such KL" if all(d > 0 for _, d in diffs) else
                           "below best-of-n at every such KL" if all(d < 0 for _, d in diffs) else "mixed")
                lines.append(f"{NAMES.get(method, method)} minus best-of-n at best-of-n's KLs inside the compared range "
                             f"({parts}): {verdict}.")
    return lines


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    import numpy as np

    return float(np.interp(x, xs, ys))


def _pairs_quality(root: Path) -> dict | None:
    from .diagnostics import preference_quality
    from .stages import HELDOUT_SCORES, read_jsonl

    path = root / "pairs" / "pairs.jsonl"
    if not path.exists():
        return None
    heldout = read_json(root / "reward" / HELDOUT_SCORES, None)
    if heldout and not any(v is not None for v in heldout.get("gold_chosen", [])):
        heldout = None
    return preference_quality(read_jsonl(path), heldout=heldout)


def _frontier_ids(cmp_list: list[dict]) -> set[str]:
    """Ids of the checkpoints on any seed's frontier (``compare_frontiers`` names a point
    by its ``id``, which every point given to it has)."""
    return {m for cmp in cmp_list for per_seed in (cmp["gold"].get("frontier_points") or {}).values()
            for members in per_seed.values() for m in members}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _verdict_lines(cmp_list: list[dict], methods: list[str], excluded: list[dict], budget) -> list[str]:
    lines = []
    if not cmp_list:
        only = ", ".join(NAMES.get(m, m) for m in methods) or "no method"
        lines.append(f"Insufficient evidence: a comparison needs an RL method (ppo or ppo_gt) and DPO; this run has {only}.")
    for cmp in cmp_list:
        lines.append(_sentence(cmp["gold"]["text"]))
        if cmp.get("win_rate"):
            lines.append("Win rate against the SFT model (gold judge; frontiers chosen as above): "
                         + cmp["win_rate"]["text"])
    if budget is not None:
        lines.append(f"Only checkpoints at KL <= {budget:.2f} nats were compared (report.kl_budget).")
    if excluded:
        lines.append(f"{len(excluded)} checkpoint(s) had no KL estimate and are left off every frontier: "
                     + ", ".join(e["id"] for e in excluded[:6]) + ("..." if len(excluded) > 6 else "") + ".")
    return lines


def build(root: Path, report_cfg: dict | None = None) -> dict:
    """Everything the report shows, as plain data (also written to ``report/report.json``)."""
    from .evaluate import collect_points

    report_cfg = report_cfg or read_json(root / "report" / "report_config.json", {}) or {}
    points = [p for p in collect_points(root) if p.get("gold") is not None]
    ref = next((p for p in points if p["method"] == "sft"), None)
    if ref is None:
        from ..errors import DataError

        raise DataError(f"{root}: no evaluated SFT reference under eval/; run the eval stage first")
    budget = report_cfg.get("kl_budget")
    excluded = [{"id": p["id"], "reason": "no KL estimate"} for p in points if p["method"] != "sft" and p.get("kl") is None]
    methods = sorted({p["method"] for p in points if p["method"] != "sft"}, key=lambda m: list(NAMES).index(m)
                     if m in NAMES else 99)
    cmp_list = _comparisons(points, methods, budget)
    primary = cmp_list[0] if cmp_list else None
    lines = _verdict_lines(cmp_list, methods, excluded, budget)
    power = _power({**primary["gold"], "a": primary["a"], "b": primary["b"]}) if primary else None
    power_text = _power_text(power)
    bon = _best_of_n(root)
    bon_lines = _bon_against(bon, cmp_list)
    over = _overoptimisation(points, ref)
    quality = _pairs_quality(root)
    frontier_ids = _frontier_ids(cmp_list)
    costs = _cost_rows(root)
    lm_rows = _lm_eval_rows(points)
    prompts = read_json(root / "eval" / "summary" / "prompts.json", None)
    methods_table = []
    for cmp in cmp_list:
        for row in _method_rows(cmp["gold"], ref.get("gold")):
            if row["method"] not in {r["method"] for r in methods_table}:
                methods_table.append({**row, "kl_range": cmp["gold"].get("kl_range")})
    return {
        "title": report_cfg.get("title", "PPO vs DPO"),
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "run_dir": str(root.resolve()),
        "budget": budget,
        "reference": {"mean": ref.get("gold"), "ci": ref.get("gold_ci"), "stderr": ref.get("gold_stderr"),
                      "val": ref.get("gold_val")},
        "methods": methods_table,
        "comparisons": cmp_list,
        "verdict": lines,
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
        "win_rates": _win_rows(points, frontier_ids),
        "lm_eval": lm_rows,
        "alignment_tax": _alignment_tax(lm_rows),
        "costs": costs,
        "total": {"wall_time_s": sum(r["wall_time_s"] for r in costs),  # all sessions of a resumed run
                  "peak_rss_mb": max([r["peak_rss_mb"] for r in costs] + [0]),
                  "tokens": sum(r["tokens"] for r in costs)},
        "examples": {p["id"]: p.get("examples", []) for p in points if p.get("final")},
        "histories": _histories(root),
        "_points_full": points,
        "_over_inputs": over,
    }


def render_report(run_dir, report_cfg: dict | None = None) -> Path:
    """Write ``report/`` (report.md, report.html, report.json, plots/*.png) from a run folder."""
    from . import diagnostic_plots as dplots

    root = Path(run_dir)
    out = root / "report"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    if report_cfg is not None:
        write_json(out / "report_config.json", report_cfg)
    data = build(root, report_cfg)
    p = out / "plots"
    primary = data["comparisons"][0]["gold"] if data["comparisons"] else None
    over = data["_over_inputs"]
    power = data["power"] or {}
    figures = {
        "frontier": plots.frontier(data["_points_full"], NAMES, p / "frontier.png", comparison=primary,
                                   best_of_n=data["best_of_n"]),
        "win_rates": plots.win_rates(data["win_rates"], p / "win_rates.png") if data["win_rates"] else None,
        "best_of_n": dplots.best_of_n_plot(data["best_of_n"], p / "best_of_n.png", sft_gold=data["reference"]["mean"])
        if data["best_of_n"] else None,
        "overoptimisation": dplots.overoptimisation_plot(over["result"], over["runs"], over["sft"], p / "overoptimisation.png")
        if over else None,
        "power": dplots.power_plot(power["curve"], p / "power.png", current_seeds=power.get("current_seeds"),
                                   needed=power.get("seeds_needed")) if power.get("curve") else None,
        "preference_quality": dplots.preference_quality_plot(data["preference_quality"], p / "preference_quality.png")
        if data["preference_quality"] else None,
        "training": plots.training_curves(data["histories"], p / "training.png") if data["histories"] else None,
        "cost": plots.cost(data["costs"], p / "cost.png") if data["costs"] else None,
    }
    for key in ("_points_full", "_over_inputs", "histories"):
        data.pop(key)
    write_json(out / "report.json", data)
    shown = {k: v for k, v in figures.items() if v}
    (out / "report.md").write_text(_markdown(data, shown))
    (out / "report.html").write_text(_html(data, shown))
    return out


def _render(name: str, **context) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("trl_plus.pipeline", "templates"),
                             autoescape=lambda name: bool(name) and name.endswith(".html.j2"), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(f=_fmt, ci=_ci, signed=_signed)
    return env.get_template(name).render(names=NAMES, **context)


def _html(data: dict, figures: dict) -> str:
    images = {k: base64.b64encode(Path(p).read_bytes()).decode() for k, p in figures.items()}
    return _render(TEMPLATE, d=data, images=images)


def _markdown(data: dict, figures: dict) -> str:
    images = {k: f"plots/{Path(p).name}" for k, p in figures.items()}
    return _render("report.md.j2", d=data, images=images)
