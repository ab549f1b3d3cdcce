"""The comparison report: ``report.md`` and a self-contained ``report.html``.

Everything is read back from the run folder (eval results, trainer states, stage
markers), so ``trl-plus report RUN_DIR`` re-renders it without the recipe's models.
"""

from __future__ import annotations

import base64
import math
import time
from collections import defaultdict
from pathlib import Path

from . import plots, verdict
from .rundir import DONE, fingerprint, read_json, write_json

NAMES = {"ppo": "PPO (reward model)", "ppo_gt": "PPO (gold reward)", "dpo": "DPO", "sft": "SFT"}
TEMPLATE = "report.html.j2"


def run_report(ctx) -> Path:
    fp = fingerprint("report", ctx.fingerprints.get("eval"), ctx.config.report.model_dump(), time.time())
    with ctx.bar("report", 1) as bar:
        folder = render_report(ctx.run.root, report_cfg=ctx.config.report.model_dump())
        bar.update(1)
    write_json(folder / DONE, {"fingerprint": fp, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return folder


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _ci(ci, digits: int = 3) -> str:
    return f"[{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]" if ci else "n/a"


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
        if not rel or rel[0] == "report" or rel[-1] == "summary":
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


def _win_rows(points: list[dict], results: dict) -> list[dict]:
    """The win-rate rows: every run's last checkpoint and, per method, the verdict's picks."""
    rows = []
    for p in points:
        if p["method"] == "sft" or not p.get("final") or not p.get("win_rate"):
            continue
        w = p["win_rate"]
        rows.append({"label": f"{NAMES.get(p['method'], p['method'])} {p['strength_key']}={p['strength']:g} "
                              f"seed {p['seed']} (step {p['step']}, KL {p['kl']:.2f})",
                     "method": p["method"], "win_rate": w["win_rate"], "win_rate_ci": w["win_rate_ci"],
                     "lc_win_rate": w.get("lc_win_rate"), "lc_win_rate_ci": w.get("lc_win_rate_ci"),
                     "wins": w.get("wins"), "ties": w.get("ties"), "losses": w.get("losses")})
    return rows


def _judged_picks(points: list[dict], method: str, budget: float) -> list[dict]:
    """Per seed, the judged (last) checkpoint of ``method`` nearest the verdict's pick: the
    best-rewarded one within the KL budget, else the one with the smallest KL."""
    by_seed = defaultdict(list)
    for p in points:
        if p["method"] == method and p.get("final") and p.get("per_prompt_win"):
            by_seed[p["seed"]].append(p)
    picks = []
    for cands in by_seed.values():
        inside = [p for p in cands if p["kl"] <= budget + 1e-9]
        picks.append(max(inside, key=lambda p: p["gold"]) if inside else min(cands, key=lambda p: p["kl"]))
    return picks


def _paired(points: list[dict], budget: float, a: str, b: str) -> dict | None:
    """Paired win-rate difference (A minus B) over prompts, each method's per-prompt scores
    averaged over its seeds' judged picks (the CI is over prompts)."""
    from ..eval import paired_difference

    def per_prompt(method):
        acc = defaultdict(list)
        picks = _judged_picks(points, method, budget)
        for p in picks:
            for k, v in p["per_prompt_win"].items():
                acc[k].append(v)
        kl = sum(p["kl"] for p in picks) / len(picks) if picks else math.nan
        return {k: sum(v) / len(v) for k, v in acc.items()}, [p["id"] for p in picks], kl

    (pa, ida, kla), (pb, idb, klb) = per_prompt(a), per_prompt(b)
    if not pa or not pb:
        return None
    return {**paired_difference(pa, pb), "checkpoints": {a: ida, b: idb}, "kl": {a: kla, b: klb}}


def _lm_eval_rows(points: list[dict]) -> list[dict]:
    """Each metric of each run's last checkpoint, with its delta against the SFT model."""
    ref = next((p for p in points if p["method"] == "sft"), None)
    if not ref or not ref.get("lm_eval"):
        return []
    ref_results = ref["lm_eval"].get("results", {})
    rows = []
    for p in [ref] + [p for p in points if p["method"] != "sft" and p.get("final") and p.get("lm_eval")]:
        for task, metrics in sorted(p["lm_eval"].get("results", {}).items()):
            for key, value in metrics.items():
                if not isinstance(value, (int, float)) or "_stderr" in key or key == "sample_len":
                    continue
                metric, _, filt = key.partition(",")
                se = metrics.get(f"{metric}_stderr,{filt}")
                ref_v = ref_results.get(task, {}).get(key)
                ref_se = ref_results.get(task, {}).get(f"{metric}_stderr,{filt}")
                delta = None if p is ref or ref_v is None else value - ref_v
                delta_se = None if delta is None or se is None or ref_se is None else math.sqrt(se ** 2 + ref_se ** 2)
                rows.append({"model": "SFT (reference)" if p is ref else f"{NAMES[p['method']]} {p['run'].split('/')[-1]}",
                             "task": task.replace("trl_plus_", ""), "metric": metric, "value": value, "stderr": se,
                             "delta": delta, "delta_stderr": delta_se})
    return rows


def build(root: Path, report_cfg: dict | None = None) -> dict:
    """Everything the report shows, as plain data (also written to ``report/report.json``)."""
    from .evaluate import collect_points

    report_cfg = report_cfg or read_json(root / "report" / "report_config.json", {}) or {}
    points = [p for p in collect_points(root) if p.get("gold") is not None]
    ref = next((p for p in points if p["method"] == "sft"), None)
    if ref is None:
        from ..errors import DataError

        raise DataError(f"{root}: no evaluated SFT reference under eval/; run the eval stage first")
    by_method = defaultdict(list)
    for p in points:
        if p["method"] != "sft":
            by_method[p["method"]].append(p)
    budget = verdict.kl_budget(by_method, report_cfg.get("kl_budget"))
    results = verdict.method_results(points, budget)
    reference = verdict.pooled_bootstrap([ref["gold_samples"]])
    comparison = None
    rl = next((m for m in ("ppo", "ppo_gt") if m in results), None)
    if rl and "dpo" in results:
        samples = {m: [next(p for p in points if p["id"] == cid)["gold_samples"] for cid in results[m]["checkpoints"].values()]
                   for m in (rl, "dpo")}
        comparison = {"a": rl, "b": "dpo", "gold": verdict.gold_difference(samples, rl, "dpo"),
                      "win_rate": _paired(points, budget, rl, "dpo")}
    lines = verdict.verdict_text(reference, results, budget, comparison, NAMES)
    if comparison and comparison.get("win_rate"):
        w = comparison["win_rate"]
        lines.append(
            f"Win rate against the SFT model, {NAMES[rl]} minus DPO: {w['difference']:+.3f} "
            f"(95% CI {w['ci'][0]:+.3f} to {w['ci'][1]:+.3f}, paired bootstrap over {w['prompts']} prompts, seeds "
            f"averaged; judges ran on the runs' last checkpoints: per seed the best within the KL budget, else the "
            f"closest, here {NAMES[rl]} at KL {w['kl'][rl]:.2f} and DPO at KL {w['kl']['dpo']:.2f}): "
            f"{'significant' if w['significant'] else 'not significant'}."
        )
    costs = _cost_rows(root)
    return {
        "title": report_cfg.get("title", "PPO vs DPO"),
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "run_dir": str(root.resolve()),
        "budget": budget,
        "reference": {**reference, "stderr": ref.get("gold_stderr")},
        "results": results,
        "comparison": comparison,
        "verdict": lines,
        "points": [{k: v for k, v in p.items() if k not in ("gold_samples", "per_prompt_win", "lm_eval", "examples")}
                   for p in points],
        "win_rates": _win_rows(points, results),
        "lm_eval": _lm_eval_rows(points),
        "costs": costs,
        "total": {"wall_time_s": sum(r["wall_time_s"] for r in costs),  # all sessions of a resumed run
                  "peak_rss_mb": max([r["peak_rss_mb"] for r in costs] + [0]),
                  "tokens": sum(r["tokens"] for r in costs)},
        "examples": {p["id"]: p.get("examples", []) for p in points if p.get("final")},
        "histories": _histories(root),
        "_points_full": points,
    }


def render_report(run_dir, report_cfg: dict | None = None) -> Path:
    """Write ``report/`` (report.md, report.html, report.json, plots/*.png) from a run folder."""
    root = Path(run_dir)
    out = root / "report"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    if report_cfg is not None:
        write_json(out / "report_config.json", report_cfg)
    data = build(root, report_cfg)
    figures = {
        "frontier": plots.frontier(data["_points_full"], NAMES, out / "plots" / "frontier.png", data["budget"]),
        "win_rates": plots.win_rates(data["win_rates"], out / "plots" / "win_rates.png") if data["win_rates"] else None,
        "training": plots.training_curves(data["histories"], out / "plots" / "training.png") if data["histories"] else None,
        "cost": plots.cost(data["costs"], out / "plots" / "cost.png") if data["costs"] else None,
    }
    data.pop("_points_full")
    data.pop("histories")
    write_json(out / "report.json", data)
    (out / "report.md").write_text(_markdown(data, {k: v for k, v in figures.items() if v}))
    (out / "report.html").write_text(_html(data, {k: v for k, v in figures.items() if v}))
    return out


def _render(name: str, **context) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("trl_plus.pipeline", "templates"),
                             autoescape=lambda name: bool(name) and name.endswith(".html.j2"), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(f=_fmt, ci=_ci, signed=lambda x, d=3: "n/a" if x is None else f"{x:+.{d}f}")
    return env.get_template(name).render(names=NAMES, **context)


def _html(data: dict, figures: dict) -> str:
    images = {k: base64.b64encode(Path(p).read_bytes()).decode() for k, p in figures.items()}
    return _render(TEMPLATE, d=data, images=images)


def _markdown(data: dict, figures: dict) -> str:
    images = {k: f"plots/{Path(p).name}" for k, p in figures.items()}
    return _render("report.md.j2", d=data, images=images)
