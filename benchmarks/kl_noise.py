"""How the KL estimate's noise moves the report's verdict, on a finished comparison run.

    python benchmarks/kl_noise.py RUN_DIR [--samples 8] [--draws 1000] [--threads 1]

For every evaluated checkpoint of ``RUN_DIR`` (a ``trl-plus quickstart`` or ``compare``
folder), ``--samples`` fresh completions per test prompt are drawn at temperature 1 and
scored both ways: the token estimator (the exact KL of the next-token distributions,
summed along each sample) and the sampled log-ratio. That gives each checkpoint a precise
KL and, for each estimator, the spread of one sample within a prompt.

Then the verdict (gold reward at matched KL, PPO against DPO, Welch's t over seeds) is
recomputed ``--draws`` times for each KL setting (estimator x samples per prompt), with
each checkpoint's KL replaced by its precise value plus Gaussian noise of that setting's
spread; the gold rewards stay as evaluated. Printed per setting: how often the verdict
detects a difference, the median width of its 95% interval and the mean difference; the
last line is the token estimator's per-sample variance against the log-ratio's (median
ratio over checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from _timing import pin_threads

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SETTINGS = [("sample", 1), ("sample", 2), ("token", 1), ("token", 2), ("token", 4)]


def precise_kl(run: Path, n_samples: int, seed: int = 77) -> dict:
    """Per evaluated checkpoint: its KL from ``n_samples`` token-estimator samples per
    prompt and the within-prompt variance of one sample under each estimator."""
    from tqdm.auto import tqdm

    from trl_plus.eval.generation import GenerationSettings, encode_prompts, load_policy, sample_token_ids
    from trl_plus.eval.kl import token_kl

    points = json.loads((run / "eval" / "summary" / "points.json").read_text())
    prompts = [json.loads(line)["prompt"] for line in (run / "corpus" / "eval_prompts.jsonl").read_text().splitlines()]
    reference = load_policy(str(run / "sft"))
    out = {}
    trained = [p for p in points if p["method"] != "sft" and p.get("kl") is not None]
    for p in tqdm(trained, desc="precise KL", unit="checkpoint"):
        policy = load_policy(p["path"])
        ids = encode_prompts(policy.tokenizer, prompts)
        settings = GenerationSettings(max_new_tokens=p.get("max_new_tokens") or 24, temperature=1.0, top_p=1.0,
                                      num_samples=n_samples, batch_size=128, seed=seed)
        samples = sample_token_ids(policy, ids, settings, progress=False)
        expanded = [ids[i // n_samples] for i in range(len(samples))]
        kl, lp, lq = token_kl(policy.model, reference.model, expanded, samples,
                              pad_id=policy.tokenizer.pad_token_id or 0, batch_size=128)
        token, ratio = kl.reshape(-1, n_samples), (lp - lq).reshape(-1, n_samples)
        out[p["id"]] = {"kl": float(token.mean()), "prompts": len(prompts),
                        "token": float(token.var(axis=1, ddof=1).mean()),
                        "sample": float(ratio.var(axis=1, ddof=1).mean())}
    return out


def verdicts(points: list[dict], precise: dict, kind: str, k: int, draws: int, seed: int = 0,
             val_prompts: int | None = None) -> dict:
    import numpy as np

    from trl_plus.eval import compare_frontiers
    from trl_plus.pipeline.report import _frontier_inputs

    rng = np.random.default_rng(seed)
    rl = next(m for m in ("ppo", "ppo_gt") if any(p["method"] == m for p in points))
    detected, widths, diffs = 0, [], []
    for _ in range(draws):
        noisy = []
        for p in points:
            q = dict(p)
            if p["id"] in precise:
                c = precise[p["id"]]
                q["kl"] = c["kl"] + rng.normal(0.0, (c[kind] / k / c["prompts"]) ** 0.5)
                if "kl_val" in p and p["method"] != "sft":
                    # The validation KL that places the fits: the same setting on the validation
                    # prompts, drawn independently (the precise KL of the test prompts as its truth).
                    q["kl_val"] = c["kl"] + rng.normal(0.0, (c[kind] / k / (val_prompts or c["prompts"])) ** 0.5)
            noisy.append(q)
        r = compare_frontiers(_frontier_inputs(noisy, "gold_per_prompt", None), rl, "dpo")
        if r.get("ci") is None:
            continue
        lo, hi = r["ci"]
        detected += lo > 0 or hi < 0
        widths.append(hi - lo)
        diffs.append(r["difference"])
    n = len(widths)
    return {"draws": n, "detected": detected / n if n else float("nan"),
            "median_width": statistics.median(widths) if n else float("nan"),
            "mean_difference": statistics.fmean(diffs) if n else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished quickstart / compare run folder")
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt for the precise KL")
    parser.add_argument("--draws", type=int, default=1000, help="noisy verdicts per KL setting")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    pin_threads(args.threads)
    points = json.loads((args.run / "eval" / "summary" / "points.json").read_text())
    precise = precise_kl(args.run, args.samples)
    prompts = json.loads((args.run / "eval" / "summary" / "prompts.json").read_text())
    val_prompts = (prompts.get("validation") or {}).get("count")
    exact = verdicts(points, {i: {**c, "token": 0.0, "sample": 0.0} for i, c in precise.items()}, "token", 1, 1,
                     val_prompts=val_prompts)
    print(f"verdict with the precise KL ({args.samples} token samples per prompt): difference "
          f"{exact['mean_difference']:+.4f}, 95% CI width {exact['median_width']:.4f}, "
          f"{'detected' if exact['detected'] else 'not detected'}")
    for kind, k in SETTINGS:
        v = verdicts(points, precise, kind, k, args.draws, val_prompts=val_prompts)
        print(f"KL {k} x {kind:6s}: detects a difference in {v['detected']:.0%} of {v['draws']} draws, median 95% CI "
              f"width {v['median_width']:.4f}, mean difference {v['mean_difference']:+.4f}")
    ratios = [c["sample"] / c["token"] for c in precise.values() if c["token"] > 0]
    fewer = sum(c["sample"] / 2 > c["token"] for c in precise.values())
    print(f"per-sample variance, log-ratio / token estimator: median {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} checkpoints); one token sample is less "
          f"noisy than two log-ratio samples on {fewer} of {len(precise)}")


if __name__ == "__main__":
    main()
