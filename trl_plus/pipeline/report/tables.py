"""The report's tables: each method's per-seed frontier gain, the win rates of each run's
last checkpoint, and the lm-eval capability rows with the alignment-tax lines drawn from
them (a run, not an item, is the unit of replication)."""

from __future__ import annotations

import math
from collections import defaultdict

from ...eval.stats import t_interval
from .formatting import NAMES, _signed


def _method_rows(cmp: dict, reference: float | None) -> list[dict]:
    rows = []
    for method, per_seed in (cmp.get("per_seed") or {}).items():
        values = [v for v in per_seed.values() if v is not None]
        iv = {**t_interval(values), "seeds": (cmp.get("seeds") or {}).get(method, len(values))}
        rows.append({"method": method, **iv, "seed_values": values,
                     "gain": None if iv["mean"] is None or reference is None else iv["mean"] - reference})
    return rows


def _ranking_rows(ranking: dict | None, reference: float | None) -> list[dict]:
    """The ranking table: each arm, best first, over the KL range all of them reach, with
    its t interval over seeds (``rank_frontiers``' rows) and its gain over SFT."""
    if not ranking:
        return []
    return [{**row, "kl_range": ranking.get("kl_range"),
             "gain": None if row.get("mean") is None or reference is None else row["mean"] - reference}
            for row in ranking["rows"]]


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
        iv = t_interval(vals)
        head = f"{NAMES.get(method, method)}, {task}: log-likelihood margin {_signed(iv['mean'], 2)} nats against SFT"
        if iv["ci"] is None:
            lines.append(f"{head} (one run: no interval over runs).")
            continue
        lo, hi = iv["ci"]
        verdict = ("an alignment tax" if hi < 0 else "a gain in fluency" if lo > 0 else "no detectable change")
        lines.append(f"{head} (95% CI for this task alone, not corrected for the {len(acc)} method-task pairs shown, "
                     f"{_signed(lo, 2)} to {_signed(hi, 2)}, t over {len(vals)} runs): {verdict}.")
    return lines
