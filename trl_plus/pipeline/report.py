"""The comparison report: ``report.md`` and a self-contained ``report.html``.

Everything is read back from the run folder (eval results, trainer states, stage
markers), so ``trl-plus report RUN_DIR`` re-renders it without the recipe's models.

The verdict is ``trl_plus.eval.compare_frontiers``: each seed's reward-vs-KL curve (a
least-squares fit through the SFT point over all its checkpoints, so the density of a
sweep cannot tilt it) averaged over the KL range the methods reach, one number per seed,
Welch's t over seeds; the headline tests are one family under Holm's correction. The
frontier plot draws exactly those curves, so the two cannot disagree.
"""

from __future__ import annotations

import base64
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path

from . import plots
from .rundir import DONE, Plan, fingerprint, read_json, run_status, write_json

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


def _reads(root: Path):
    """Which steps of the run folder the report reads: with a ``plan.json``, those of the
    recipe now being run whose markers match it (see ``rundir.Plan``); else every one."""
    plan = Plan.read(root)
    return (lambda rel: True) if plan is None else plan.current


def _histories(root: Path) -> dict:
    out = {}
    reads = _reads(root)
    for state in sorted(root.glob("*/*/trainer_state.json")):
        method = state.parent.parent.name
        if method in NAMES and reads(f"{method}/{state.parent.name}"):
            out[f"{method}/{state.parent.name}"] = (method, read_json(state, {}).get("log_history", []))
    return out


def _kl_controllers(root: Path) -> list[str]:
    """One sentence per ``kl_targets`` run: the adaptive controller's horizon and how it was
    set (scaled to the run's samples, or the recipe's), and where its kl_coef ended."""
    lines = []
    reads = _reads(root)
    for marker in sorted(root.glob("*/*/" + DONE)):
        if not reads(f"{marker.parent.parent.name}/{marker.parent.name}"):
            continue
        ctl = read_json(marker, {}).get("kl_controller")
        if not isinstance(ctl, dict) or ctl.get("horizon") is None:
            continue
        how = (f"scaled to the run: {ctl.get('horizon_fraction')} x its {ctl.get('samples')} samples "
               f"({ctl.get('rollouts')} rollouts of {ctl.get('samples_per_rollout')})"
               if ctl.get("horizon_source") == "scaled" else "set in the recipe")
        final = ctl.get("final_kl_coef")
        lines.append(f"{marker.parent.parent.name}/{marker.parent.name}: adaptive KL controller, target {ctl.get('target')}, "
                     f"horizon {ctl['horizon']} samples ({how})"
                     + (f", kl_coef {ctl.get('init')} -> {final:.3g}" if isinstance(final, (int, float)) else "") + ".")
    return lines


def _cost_rows(root: Path) -> list[dict]:
    """Wall time, peak memory and tokens per stage (sweep runs and eval checkpoints summed)."""
    agg: dict[str, dict] = defaultdict(lambda: {"wall_time_s": 0.0, "peak_rss_mb": 0.0, "tokens": 0, "steps": 0})
    reads = _reads(root)
    for marker in root.rglob(DONE):
        rel = marker.parent.relative_to(root).parts
        if not rel or rel[0] == "report" or rel[-1] == "summary" or (len(rel) > 1 and rel[-1] == "val"):
            continue
        if not reads("/".join(rel)):  # a step of another recipe (a left-out run): not this run's cost
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
            + ". Its noise blurs where each checkpoint sits on its seed's fitted curve, and with it the verdict "
              "when the verdict's interval is near 0; eval.kl.num_samples buys a closer estimate.")
    return {"checkpoints": len(trained), "estimators": estimators, "samples": samples, "median_stderr": median,
            "text": text}


def _comparisons(points: list[dict], methods: list[str], budget: float | None) -> list[dict]:
    """Each RL method against DPO (the DPO paper's controlled comparison), on gold reward
    and on the win rate against SFT, both through ``compare_frontiers``; then the family
    of all these tests under Holm's correction (:func:`_family`)."""
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
    _family(out)
    return out


def _family(cmp_list: list[dict], alpha: float = 0.05) -> None:
    """Mark each headline test with its Holm-adjusted p-value and the family's size, and
    downgrade a test that is significant alone but not in the family: its interval still
    excludes 0, but with several tests one such interval is expected by chance."""
    from ..eval import holm

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
    from ..eval import power_analysis, power_by_seeds

    per_seed = cmp.get("per_seed") or {}
    a, b = cmp["a"], cmp["b"]
    va = [v for v in (per_seed.get(a) or {}).values() if v is not None]
    vb = [v for v in (per_seed.get(b) or {}).values() if v is not None]
    result = power_analysis(va, vb, difference=min_effect)
    result["curve"] = power_by_seeds(result.get("sd"), min_effect)
    result["current_seeds"] = min(len(va), len(vb))
    result["min_effect"] = min_effect
    return result


def _power_text(power: dict | None) -> str | None:
    if not power:
        return None
    effect = power.get("min_effect")
    if power.get("sd") is None:
        return f"Power: {power['reason']}"
    need = power.get("seeds_needed")
    mdd = power.get("min_detectable_difference")
    n = power.get("current_seeds")
    need_txt = (f"{need} seeds per method" if need is not None else
                "no number of seeds" if power.get("reason", "").startswith("the difference is 0") else
                "more than 1000 seeds per method")
    return (f"Power, planned for the stated effect of {_fmt(effect)} gold reward (report.min_effect; set it to the "
            f"smallest difference that matters for your task): with the seed-to-seed SD of {_fmt(power.get('sd'))}, "
            f"Welch's test detects it at 80% power (two-sided, 5%) with {need_txt}; the current {n} per method have "
            f"{_fmt((power.get('current_power') or 0) * 100, 0)}% power against it, and detect a true difference of "
            f"{_fmt(mdd)} or more at 80% power. The observed difference is not what power is planned on.")


# -- the other sections -------------------------------------------------------------------


def _win_rows(points: list[dict]) -> list[dict]:
    """Win-rate rows: each run's last checkpoint (every checkpoint enters the verdict's
    fits, so the table shows where each run ended)."""
    judged = [p for p in points
              if p["method"] != "sft" and p.get("win_rate") and p["win_rate"].get("win_rate") is not None]
    chosen = [p for p in judged if p.get("final")] or judged
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
        lines.append(f"{head} (95% CI for this task alone, not corrected for the {len(acc)} method-task pairs shown, "
                     f"{_signed(lo, 2)} to {_signed(hi, 2)}, t over {len(vals)} runs): {verdict}.")
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
    # The SFT point keeps its standard error: every SFT-to-checkpoint fall is judged against
    # the noise of both ends, not a fixed tolerance.
    sft = ({"gold": ref.get("gold"), "proxy": ref.get("proxy"), "gold_stderr": ref.get("gold_stderr")}
           if ref.get("proxy") is not None else None)
    return {"result": overoptimisation(inputs, sft=sft), "runs": inputs, "sft": sft}


def _best_of_n(root: Path) -> dict | None:
    """``eval/best_of_n/best_of_n.json``. A file written before the ties-aware KL holds the
    formula log n - (n-1)/n as ``kl``: it is labelled the upper bound it is."""
    if not _reads(root)("eval/best_of_n"):
        return None  # not this recipe's (no reward stage now, or made from an earlier SFT model)
    bon = read_json(root / "eval" / "best_of_n" / "best_of_n.json", None)
    if bon and any("kl_upper_bound" not in q for q in bon.get("points", [])):
        for q in bon.get("points", []):
            q.setdefault("kl_upper_bound", q.get("kl"))
        bon["kl_method"] = ("the upper bound log n - (n-1)/n, not an estimate: this best-of-n file predates the "
                            "estimate that counts ties and duplicate completions (re-run the eval stage for it), so "
                            "best-of-n is drawn at or right of its true KL")
    return bon


def _bon_against(bon: dict | None, cmp_list: list[dict]) -> list[str]:
    """Each method's frontier minus best-of-n at best-of-n's KLs inside the compared range,
    with a t interval over seeds when the comparison carries per-seed curves
    (``diagnostics.best_of_n_against``); the rows are also kept as ``bon["comparisons"]``."""
    from .diagnostics import best_of_n_against

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
    from .diagnostics import preference_quality
    from .stages import HELDOUT_SCORES, read_jsonl

    path = root / "pairs" / "pairs.jsonl"
    reads = _reads(root)
    if not path.exists() or not reads("pairs"):
        return None
    heldout = read_json(root / "reward" / HELDOUT_SCORES, None) if reads("reward") else None
    if heldout and not any(v is not None for v in heldout.get("gold_chosen", [])):
        heldout = None
    return preference_quality(read_jsonl(path), heldout=heldout)


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
            lines.append("Win rate against the SFT model (gold judge; curves fitted as above): " + cmp["win_rate"]["text"])
    family = _family_line(cmp_list)
    if family:
        lines.append(family)
    if budget is not None:
        lines.append(f"Only checkpoints at KL <= {budget:.2f} nats were compared (report.kl_budget).")
    if excluded:
        lines.append(f"{len(excluded)} checkpoint(s) had no KL estimate and are left off every frontier: "
                     + ", ".join(e["id"] for e in excluded[:6]) + ("..." if len(excluded) > 6 else "") + ".")
    return lines


def _family_line(cmp_list: list[dict]) -> str | None:
    """One sentence: how many headline tests form the family, and each one's p-value with
    its Holm-adjusted value."""
    tests = [(c, key, c[key]) for c in cmp_list for key in ("gold", "win_rate")
             if c.get(key) and c[key].get("holm_p") is not None]
    if not tests:
        return None
    parts = []
    for c, key, t in tests:
        what = f"{NAMES.get(c['a'], c['a'])} vs {NAMES.get(c['b'], c['b'])}, {'gold reward' if key == 'gold' else 'win rate'}"
        flag = " (significant alone, not in the family)" if t.get("significant_alone") and t["status"] != "significant" else ""
        parts.append(f"{what}: p = {t['p_value']:.3f}, adjusted {t['holm_p']:.3f}{flag}")
    m = len(tests)
    head = (f"Multiplicity: these {m} headline tests are one family, and a winner is named only where Holm's correction "
            "keeps the chance of any false winner among them at 5%" if m > 1 else
            "Multiplicity: this is the only headline test, so no correction applies")
    return f"{head} ({'; '.join(parts)})."


INCOMPLETE = "INCOMPLETE run"


def _listed(items: list[str], shown: int = 6) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _missing_text(status: dict) -> str:
    parts = []
    if status["stages_missing"]:
        parts.append(f"stages not finished: {_listed(status['stages_missing'])}")
    if status["not_trained"]:
        parts.append(f"{len(status['not_trained'])} run(s) not trained: "
                     + _listed([f"{r['run']} ({r['why']})" for r in status["not_trained"]]))
    pending = status["not_evaluated"]
    if pending and all(p.endswith("/*") for p in pending):
        parts.append(f"the checkpoints of {len(pending)} run(s) not evaluated: {_listed([p[:-2] for p in pending])}")
    elif pending:
        parts.append(f"{len(pending)} checkpoint(s) not evaluated: {_listed(pending)}")
    return "; ".join(parts)


def _incomplete_line(status: dict) -> str:
    """The verdict's first line for a run that did not finish: what is missing."""
    return (f"{INCOMPLETE}: this report covers only what was evaluated so far, and its verdict may change. Missing: "
            f"{_missing_text(status)}. Finish the run with the same `trl-plus compare` command (it resumes where "
            "it stopped); the report is rendered again at its end.")


def _left_out_line(left: list[str]) -> str:
    return (f"Left out of this report: {_listed(left)}: in the run folder, but not named by the recipe it was last "
            "run with (its recipe.yaml); kept on disk, never mixed with the runs above.")


SCOPE = ("Scope of every interval in this report: it is conditional on this SFT model, this reward model, these "
         "preference pairs and these test prompts; the training seeds are the replication, so the interval says how "
         "much another seed of the same recipe could move the answer, not how another SFT model, reward model or "
         "prompt set would.")


def build(root: Path, report_cfg: dict | None = None) -> dict:
    """Everything the report shows, as plain data (also written to ``report/report.json``)."""
    from .evaluate import collect_points

    report_cfg = report_cfg or read_json(root / "report" / "report_config.json", {}) or {}
    status = run_status(root)
    points = [p for p in collect_points(root) if p.get("gold") is not None]
    ref = next((p for p in points if p["method"] == "sft"), None)
    if ref is None:
        from ..errors import DataError

        missing = "" if status["complete"] else f" ({_missing_text(status)})"
        raise DataError(f"{root}: no evaluated SFT reference under eval/ for the run's recipe{missing}; finish the "
                        "run first (the same `trl-plus compare` command resumes it)")
    budget = report_cfg.get("kl_budget")
    excluded = [{"id": p["id"], "reason": "no KL estimate"} for p in points if p["method"] != "sft" and p.get("kl") is None]
    methods = sorted({p["method"] for p in points if p["method"] != "sft"}, key=lambda m: list(NAMES).index(m)
                     if m in NAMES else 99)
    cmp_list = _comparisons(points, methods, budget)
    primary = cmp_list[0] if cmp_list else None
    lines = _verdict_lines(cmp_list, methods, excluded, budget)
    if not status["complete"]:
        lines.insert(0, _incomplete_line(status))
    if status["left_out"]:
        lines.append(_left_out_line(status["left_out"]))
    from .config import MIN_EFFECT

    min_effect = report_cfg.get("min_effect") or MIN_EFFECT
    power = _power({**primary["gold"], "a": primary["a"], "b": primary["b"]}, min_effect) if primary else None
    power_text = _power_text(power)
    bon = _best_of_n(root)
    bon_lines = _bon_against(bon, cmp_list)
    over = _overoptimisation(points, ref)
    quality = _pairs_quality(root)
    costs = _cost_rows(root)
    lm_rows = _lm_eval_rows(points)
    prompts = read_json(root / "eval" / "summary" / "prompts.json", None)
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
        "comparisons": cmp_list,
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
                                   needed=power.get("seeds_needed"), effect=power.get("min_effect"))
        if power.get("curve") else None,
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
