"""Evaluation throughput, side by side in one run (tiny offline models; CPU unless a GPU is there).

1. Judged pairs per second: the harness (``run_judge``, batched) against a naive loop that
   asks the same reward-model judge one pair at a time. Target: >= 5x.
2. Generation: the harness's ``generate`` (length-sorted, left-padded batches) against
   lm-eval's own ``HFLM.generate_until`` on the same prompts, model, batch size and greedy
   settings. Target: >= 1.0x.
3. The length-controlled win rate's bootstrap (every resample fitted at once by Newton
   steps on bootstrap counts) against a scikit-learn refit of each of the same resamples,
   timed interleaved; no torch involved. Target: >= 20x.
4. Seconds per evaluated checkpoint: one ``evaluate_checkpoint`` of a tiny model on 256
   prompts against a tiny reference, one ``reward_source`` judge, a Python gold reward,
   KL on, lm-eval off, nothing cached; once for each KL setting of ``--kl``, samples per
   prompt and estimator: the judged completions alone with the token estimator (the
   quickstart's, ``1:token``), one more sample (``2:token``) and the quickstart's setting
   before the token estimator (``2:sample``).

    python benchmarks/eval_throughput.py [--pairs 256] [--prompts 128] [--max-new-tokens 32]
        [--lc-prompts 256] [--lc-resamples 1000] [--lc-repeats 7] [--eval-prompts 256]
        [--kl 1:token,2:token,2:sample]
        [--only judging,generation,lc,evaluate]
"""

from __future__ import annotations

import argparse
import os
import time

from _timing import MIN_REPEATS, interleaved, pin_threads

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def prompt_texts(n: int) -> list[str]:
    from trl_plus.testing import preference_rows

    rows = preference_rows()
    return [rows[i % len(rows)]["prompt"] + " " * (i % 3) for i in range(n)]


def bench_judging(n_pairs: int, batch_size: int, repeats: int = MIN_REPEATS) -> dict:
    from trl_plus.eval.judging import run_judge
    from trl_plus.manager import Hooks

    hooks = Hooks()
    judge = hooks.components().judge({"name": "reward_model", "model": "tiny:reward-model", "batch_size": 2 * batch_size})
    prompts = prompt_texts(n_pairs)
    a = [" great . what a gem ." if i % 2 else " bad ." for i in range(n_pairs)]
    b = [" the worst ." if i % 3 else " fine and moving ." for i in range(n_pairs)]
    judge(prompts[:4], a[:4], b[:4])  # warm-up
    t = interleaved(lambda: run_judge(judge, "reward_model", prompts, a, b, batch_size=batch_size, progress=False),
                    lambda: [judge([p], [x], [y])[0] for p, x, y in zip(prompts, a, b)], repeats)
    agree = max(abs(u - v) for u, v in zip(t["ours"], t["theirs"]))
    return {"pairs": n_pairs, "harness_pairs_per_s": n_pairs / t["ours_s"], "naive_pairs_per_s": n_pairs / t["theirs_s"],
            "speedup": t["ratio"], "iqr": t["ratio_iqr"], "repeats": t["repeats"], "max_abs_difference": agree}


def bench_generation(n_prompts: int, max_new_tokens: int, batch_size: int, repeats: int = MIN_REPEATS) -> dict:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from trl_plus.eval.generation import GenerationSettings, generate, load_policy

    policy = load_policy("tiny:causal-lm")
    prompts = prompt_texts(n_prompts)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)
    generate(policy, prompts[:batch_size], settings, progress=False)  # warm-up

    lm = HFLM(pretrained=policy.model, tokenizer=policy.tokenizer, batch_size=batch_size,
              device=str(policy.device), max_length=256)
    eos = policy.tokenizer.eos_token
    gen_kwargs = {"until": [eos], "max_gen_toks": max_new_tokens, "do_sample": False}
    requests = [Instance(request_type="generate_until", doc={}, arguments=(p, dict(gen_kwargs)), idx=0)
                for p in prompts]
    lm.generate_until(requests[:batch_size], disable_tqdm=True)  # warm-up
    t = interleaved(lambda: generate(policy, prompts, settings, progress=False),  # no cache path: really samples
                    lambda: lm.generate_until(requests, disable_tqdm=True), repeats)
    same = sum(x.strip() == y.strip() for x, y in zip(t["ours"], t["theirs"]))
    return {"prompts": n_prompts, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
            "harness_prompts_per_s": n_prompts / t["ours_s"], "lm_eval_prompts_per_s": n_prompts / t["theirs_s"],
            "speedup": t["ratio"], "iqr": t["ratio_iqr"], "repeats": t["repeats"],
            "identical_completions": f"{same}/{n_prompts}"}


def _sklearn_lc(scores, diff) -> float:
    """One length-controlled win rate by a scikit-learn fit of the duplicated rows."""
    import math

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    if np.all(scores == scores[0]) and scores[0] in (0.0, 1.0):
        return float(scores[0])
    std = diff.std()
    x = (diff / std if std > 0 else np.zeros_like(diff)).reshape(-1, 1)
    model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000, tol=1e-10)
    model.fit(np.vstack([x, x]), np.concatenate([np.ones_like(scores), np.zeros_like(scores)]),
              sample_weight=np.concatenate([scores, 1 - scores]))
    return 1 / (1 + math.exp(-model.intercept_[0]))


def bench_lc_bootstrap(n_prompts: int, n_resamples: int, repeats: int = MIN_REPEATS) -> dict:
    import numpy as np

    from trl_plus.eval.stats import counts_of, lc_bootstrap_estimates

    rng = np.random.default_rng(0)
    diff = rng.normal(0, 20, size=n_prompts).round()  # length differences in characters
    p_win = 1 / (1 + np.exp(-(0.2 + diff / 20)))  # longer completions win more often
    u = rng.random(n_prompts)
    scores = np.where(u < 0.9 * p_win, 1.0, np.where(u < 0.9 * p_win + 0.1, 0.5, 0.0))
    ids = list(range(n_prompts))
    picks = rng.integers(0, n_prompts, size=(n_resamples, n_prompts))
    counts = counts_of(picks, n_prompts)
    lc_bootstrap_estimates(scores, diff, ids, counts=counts[:10])  # warm-up
    t = interleaved(lambda: lc_bootstrap_estimates(scores, diff, ids, counts=counts)[0],
                    lambda: np.array([_sklearn_lc(scores[p], diff[p]) for p in picks]), repeats)
    return {"prompts": n_prompts, "resamples": n_resamples, "repeats": t["repeats"],
            "ours_s": t["ours_s"], "sklearn_s": t["theirs_s"], "ratio": t["ratio"], "ratio_iqr": t["ratio_iqr"],
            "max_abs_difference": float(np.abs(t["ours"] - t["theirs"]).max())}


QUICKSTART_SHAPE = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "max_len": 128}  # recipes/quickstart.yaml


def bench_evaluate(n_prompts: int, n_checkpoints: int = 4, kl_samples: int = 1, estimator: str = "token") -> dict:
    """Seconds per evaluated checkpoint in a sweep: the quickstart's model shape and eval
    settings (24 new tokens at temperature 1, batch 128, KL with ``kl_samples`` per prompt by
    ``estimator``, 1 and token there),
    gold reward and a judge on 256 prompts, lm-eval aside. The reference's completions are
    shared by every checkpoint of a sweep (cached after the first, as in the pipeline), so
    one warm-up checkpoint fills them and the next ``n_checkpoints`` are timed, each a
    different model loaded from disk, as the eval stage loads it."""
    import json
    import statistics
    import tempfile
    from pathlib import Path

    from trl_plus.eval import evaluate_checkpoint, load_policy
    from trl_plus.tiny import build_model, build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = prompt_texts(n_prompts)
        tokenizer = build_tokenizer(texts)
        paths = []
        for seed in range(n_checkpoints + 2):
            model = build_model("causal-lm", tokenizer, seed=seed, **QUICKSTART_SHAPE)
            paths.append(root / f"model-{seed}")
            model.save_pretrained(paths[-1])
            tokenizer.save_pretrained(paths[-1])
        (root / "scores.py").write_text(
            "def words(prompts, completions, **columns):\n    return [float(len(c.split())) for c in completions]\n"
        )
        prompts = root / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in texts))
        scorer = {"name": "python", "function": f"{root / 'scores.py'}:words"}
        config = {"judges": [{"name": "reward_source", "source": scorer}], "gold": scorer, "tasks": [],
                  "generation": {"max_new_tokens": 24, "temperature": 1.0, "batch_size": 128, "seed": 0},
                  "kl": {"enabled": True, "num_samples": kl_samples, "estimator": estimator}, "cache": str(root / "generations.jsonl")}
        reference = load_policy(str(paths[0]))  # loaded once per stage, as the eval stage does
        times, floors, out = [], [], None
        for i, path in enumerate(paths[1:]):
            t = time.perf_counter()
            out = evaluate_checkpoint(str(path), str(prompts), reference=reference, config=config,
                                      out_dir=root / f"eval-{i}", progress=False)
            if i:  # the first one also samples the reference's completions
                times.append(time.perf_counter() - t)
                floors.append(_forwards_floor(path, reference.model, texts, out["kl"]["num_samples"]))
    ratios = [a / b for a, b in zip(times, floors)]
    return {"prompts": n_prompts, "checkpoints": len(times), "seconds": statistics.median(times),
            "range": (min(times), max(times)), "floor": statistics.median(floors),
            "ratio": statistics.median(ratios), "ratio_range": (min(ratios), max(ratios)),
            "kl_samples": out["kl"]["num_samples"], "kl_reused": out["kl"].get("reused_samples", 0),
            "estimator": out["kl"]["estimator"]}


def _forwards_floor(path, reference_model, texts: list[str], kl_samples: int) -> float:
    """The forwards an evaluated checkpoint cannot do without, in bare transformers: load it,
    sample ``kl_samples`` completions per prompt (the judged one among them), and score
    them under the reference; seconds. (The token estimator takes the policy's next-token
    distributions from sampling, so neither estimator needs a forward pass of the policy.)"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), 128):
            batch = tok(texts[start:start + 128], return_tensors="pt", padding=True)
            for _ in range(kl_samples):
                rows.append(model.generate(**batch, do_sample=True, top_k=0, max_new_tokens=24,
                                           pad_token_id=tok.pad_token_id))
        for out in rows:
            reference_model(input_ids=out, attention_mask=(out != tok.pad_token_id).long())
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lc-prompts", type=int, default=256)
    parser.add_argument("--lc-resamples", type=int, default=1000)
    parser.add_argument("--lc-repeats", type=int, default=7)
    parser.add_argument("--eval-prompts", type=int, default=256)
    parser.add_argument("--kl", default="1:token,2:token,2:sample",
                        help="KL settings of the per-checkpoint measurement, samples per prompt:estimator, one line "
                             "each (1:token is the quickstart's: the judged completions alone, token estimator)")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help="interleaved repeats (at least 7)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--only", default="judging,generation,lc,evaluate",
                        help="comma-separated measurements to run")
    args = parser.parse_args()
    only = set(args.only.split(","))
    import torch

    threads = pin_threads(args.threads)
    print(f"device: {'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, "
          f"threads {threads}")
    summary = []
    if "judging" in only:
        j = bench_judging(args.pairs, args.batch_size, args.repeats)
        print(f"judging    {j['pairs']} pairs: harness {j['harness_pairs_per_s']:.1f} pairs/s, one pair at a time "
              f"{j['naive_pairs_per_s']:.1f} pairs/s -> median {j['speedup']:.1f}x (IQR {j['iqr'][0]:.1f}-"
              f"{j['iqr'][1]:.1f}x over {j['repeats']} interleaved repeats; target >= 5x); "
              f"max |difference| {j['max_abs_difference']:.1e}")
        summary.append(f"judging {j['speedup']:.2f}x")
    if "generation" in only:
        g = bench_generation(args.prompts, args.max_new_tokens, args.batch_size, args.repeats)
        print(f"generation {g['prompts']} prompts x {g['max_new_tokens']} tokens, batch {g['batch_size']}: harness "
              f"{g['harness_prompts_per_s']:.1f} prompts/s, lm-eval generate_until {g['lm_eval_prompts_per_s']:.1f} "
              f"prompts/s -> median {g['speedup']:.2f}x (IQR {g['iqr'][0]:.2f}-{g['iqr'][1]:.2f}x over "
              f"{g['repeats']} interleaved repeats; target >= 1.0x); identical greedy completions "
              f"{g['identical_completions']}")
        summary.append(f"generation {g['speedup']:.2f}x")
    if "lc" in only:
        lc = bench_lc_bootstrap(args.lc_prompts, args.lc_resamples, args.lc_repeats)
        print(f"lc bootstrap {lc['resamples']} resamples x {lc['prompts']} prompts: all at once {lc['ours_s'] * 1e3:.0f} ms, "
              f"scikit-learn refit per resample {lc['sklearn_s']:.2f} s -> median {lc['ratio']:.0f}x "
              f"(IQR {lc['ratio_iqr'][0]:.0f}-{lc['ratio_iqr'][1]:.0f}x over {lc['repeats']} interleaved repeats; "
              f"target >= 20x); max |difference| {lc['max_abs_difference']:.1e}")
        summary.append(f"lc bootstrap {lc['ratio']:.1f}x")
    if "evaluate" in only:
        for setting in args.kl.split(","):
            kl_samples, _, estimator = setting.partition(":")
            e = bench_evaluate(args.eval_prompts, kl_samples=int(kl_samples), estimator=estimator or "token")
            print(f"seconds per evaluated checkpoint (the quickstart's 128 x 4 model and eval settings, {e['prompts']} "
                  f"prompts, reward_source judge, python gold, KL on, lm-eval off): median {e['seconds']:.2f} s over "
                  f"{e['checkpoints']} checkpoints (range {e['range'][0]:.2f}-{e['range'][1]:.2f} s; target <= 1 s); "
                  f"KL {e['kl_samples']} samples per prompt, {e['kl_reused']} of them the judged completions, "
                  f"{e['estimator']} estimator; "
                  f"the bare forwards (load, sample, reference scoring) {e['floor']:.2f} s -> harness / forwards "
                  f"{e['ratio']:.2f}x (range {e['ratio_range'][0]:.2f}-{e['ratio_range'][1]:.2f}x)")
            summary.append(f"{e['seconds']:.2f} s per checkpoint with KL {kl_samples}:{e['estimator']} "
                           f"({e['ratio']:.2f}x its bare forwards)")
    print("ratios (median over interleaved repeats): " + ", ".join(summary))


if __name__ == "__main__":
    main()
