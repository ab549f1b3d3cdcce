"""The verdict's sentences: the headline comparisons, the family line, the ranking of the
arms (with more than two), the power text, the line on how KL was measured, what an
incomplete run is missing, what was left out, and the scope every interval in the report
is conditional on."""

from __future__ import annotations

import math
import statistics

from .formatting import NAMES, _fmt, _listed, _sentence

INCOMPLETE = "INCOMPLETE run"

SCOPE = ("Scope of every interval in this report: it is conditional on this SFT model, this reward model, these "
         "preference pairs and these test prompts; the training seeds are the replication, so the interval says how "
         "much another seed of the same recipe could move the answer, not how another SFT model, reward model or "
         "prompt set would.")


def _verdict_lines(cmp_list: list[dict], methods: list[str], excluded: list[dict], budget,
                   ranking: dict | None = None) -> list[str]:
    lines = []
    if not cmp_list:
        only = ", ".join(NAMES.get(m, m) for m in methods) or "no method"
        lines.append(f"Insufficient evidence: a comparison needs two arms (methods); this run has {only}.")
    for cmp in cmp_list:
        lines.append(_capital(cmp["gold"]["text"], methods))
        if cmp.get("win_rate"):
            lines.append("Win rate against the SFT model (gold judge; curves fitted as above): " + cmp["win_rate"]["text"])
    family = _family_line(cmp_list)
    if family:
        lines.append(family)
    if ranking is not None and len(methods) > 2:
        lines.append(_ranking_line(ranking, len(cmp_list)))
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


def _capital(text: str, methods: list[str]) -> str:
    """A sentence with a capital, unless it opens with an arm's name (``rloo``, a third
    party's kind), which is written as its kind is named."""
    return text if any(text.startswith(NAMES.get(m, m)) for m in methods) else _sentence(text)


def _ranking_line(ranking: dict, pairs: int) -> str:
    """The arms in order over the KL range all of them reach, and what the order is not."""
    if ranking.get("status") != "ranked":
        return _sentence(ranking["text"])
    return (f"{_sentence(ranking['text'])}. An order of means is no test: which of these differences the seeds "
            f"support is said by the {pairs} pairwise verdicts above, each over its own pair's KL range.")


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
