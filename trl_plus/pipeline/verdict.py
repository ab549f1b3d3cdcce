"""From evaluated checkpoints to a verdict that accounts for seed-to-seed spread.

One evaluated checkpoint is a *point* (KL to the reference, mean gold reward, per-prompt
gold rewards, win rate). The eval harness gives each point its sampling CI (over
prompts). Training noise is larger (seeds differ by more than that CI), so a method's
result here is a *pooled bootstrap over seeds and prompts*: resample the seeds, then the
prompts within each resampled seed, and take the grand mean. With two seeds this CI is
wide by design: it says how much a re-run could move the number.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

CONFIDENCE = 0.95


def pooled_bootstrap(per_seed: list[list[float]], n_resamples: int = 2000, seed: int = 0,
                     confidence: float = CONFIDENCE) -> dict:
    """Mean and CI over seeds and prompts (hierarchical bootstrap) of per-seed sample lists."""
    arrays = [np.asarray(v, dtype=float) for v in per_seed if len(v)]
    if not arrays:
        return {"mean": math.nan, "ci": [math.nan, math.nan], "seeds": 0, "seed_means": []}
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for b in range(n_resamples):
        picks = rng.integers(0, len(arrays), size=len(arrays))
        stats[b] = np.mean([arrays[j][rng.integers(0, arrays[j].size, size=arrays[j].size)].mean() for j in picks])
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    seed_means = [float(a.mean()) for a in arrays]
    return {"mean": float(np.mean(seed_means)), "ci": [float(lo), float(hi)], "seeds": len(arrays),
            "seed_means": seed_means, "seed_spread": float(max(seed_means) - min(seed_means)),
            "uncertainty": "pooled bootstrap over seeds and prompts", "confidence": confidence}


def best_within(points: list[dict], budget: float) -> dict | None:
    """The checkpoint of one run with the highest gold reward among those with KL <= budget."""
    inside = [p for p in points if p["kl"] <= budget + 1e-9]
    return max(inside, key=lambda p: p["gold"]) if inside else None


def kl_budget(points_by_method: dict[str, list[dict]], fixed: float | None) -> float:
    """The KL at which methods are compared: given, or the smallest of the methods' largest
    KLs, raised where needed so that every run (method and seed) has a checkpoint inside."""
    if fixed is not None:
        return float(fixed)
    largest = [max(p["kl"] for p in pts) for pts in points_by_method.values() if pts]
    if not largest:
        return math.inf
    runs = defaultdict(list)
    for pts in points_by_method.values():
        for p in pts:
            runs[(p.get("method"), p.get("seed"))].append(p["kl"])
    # Monte-Carlo KL estimates of barely-moved checkpoints can dip below 0: the budget cannot.
    return float(max([0.0, min(largest)] + [min(v) for v in runs.values()]))


def method_results(points: list[dict], budget: float, n_resamples: int = 2000) -> dict[str, dict]:
    """Per method: for each seed the best checkpoint within the KL budget (over the sweep),
    then the pooled bootstrap of their per-prompt gold rewards."""
    by_method_seed: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        if p["method"] != "sft":
            by_method_seed[p["method"]][p["seed"]].append(p)
    out = {}
    for method, seeds in sorted(by_method_seed.items()):
        chosen = {s: best_within(pts, budget) for s, pts in sorted(seeds.items())}
        chosen = {s: c for s, c in chosen.items() if c is not None}
        if not chosen:
            continue
        pooled = pooled_bootstrap([c["gold_samples"] for c in chosen.values()], n_resamples)
        out[method] = {**pooled, "checkpoints": {s: c["id"] for s, c in chosen.items()},
                       "kl": float(np.mean([c["kl"] for c in chosen.values()]))}
    return out


def _fmt(x: float) -> str:
    return f"{x:+.3f}" if not math.isnan(x) else "n/a"


def overlap(a: list[float], b: list[float]) -> bool:
    return not (a[1] < b[0] or b[1] < a[0])


def verdict_text(reference: dict, results: dict[str, dict], budget: float, difference: dict | None,
                 names: dict[str, str]) -> list[str]:
    """Plain-language sentences: each method against the reference, then PPO against DPO."""
    lines = []
    ref_ci = reference["ci"]
    for method, r in results.items():
        above = r["ci"][0] > ref_ci[1]
        lines.append(
            f"At KL <= {budget:.2f} nats, {names.get(method, method)} reached a mean gold reward of {_fmt(r['mean'])} "
            f"at KL {r['kl']:.2f} "
            f"(95% CI {_fmt(r['ci'][0])} to {_fmt(r['ci'][1])} over {r['seeds']} seed(s) and the prompts; seed means "
            f"{', '.join(_fmt(m) for m in r['seed_means'])}) against the SFT model's {_fmt(reference['mean'])} "
            f"(CI {_fmt(ref_ci[0])} to {_fmt(ref_ci[1])}): "
            + ("clearly better, the intervals do not overlap." if above else
               "not clearly better, the intervals overlap." if overlap(r["ci"], ref_ci) else "worse.")
        )
    if difference is not None:
        a, b = difference["a"], difference["b"]
        d = difference["gold"]
        sig = d["ci"][0] > 0 or d["ci"][1] < 0
        lines.append(
            f"{names.get(a, a)} minus {names.get(b, b)}: {_fmt(d['mean'])} gold reward "
            f"(95% CI {_fmt(d['ci'][0])} to {_fmt(d['ci'][1])}); the difference is "
            + ("significant." if sig else "not significant: on this evidence neither method is better.")
        )
    return lines


def gold_difference(results_points: dict[str, list[list[float]]], a: str, b: str, n_resamples: int = 2000,
                    seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """Pooled bootstrap of mean(a) - mean(b), each resampled over its seeds and prompts."""
    xa = [np.asarray(v, float) for v in results_points[a]]
    xb = [np.asarray(v, float) for v in results_points[b]]
    rng = np.random.default_rng(seed)

    def draw(arrays):
        picks = rng.integers(0, len(arrays), size=len(arrays))
        return np.mean([arrays[j][rng.integers(0, arrays[j].size, size=arrays[j].size)].mean() for j in picks])

    stats = np.array([draw(xa) - draw(xb) for _ in range(n_resamples)])
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    mean = float(np.mean([v.mean() for v in xa]) - np.mean([v.mean() for v in xb]))
    return {"mean": mean, "ci": [float(lo), float(hi)], "uncertainty": "pooled bootstrap over seeds and prompts"}
