"""Evaluation throughput, side by side in one run (tiny offline models; CPU unless a GPU is there).

1. Judged pairs per second: the harness (``run_judge``, batched) against a naive loop that
   asks the same reward-model judge one pair at a time. Target: >= 5x.
2. Generation: the harness's ``generate`` (length-sorted, left-padded batches) against
   lm-eval's own ``HFLM.generate_until`` on the same prompts, model, batch size and greedy
   settings. Target: >= 1.0x.

    python benchmarks/eval_throughput.py [--pairs 256] [--prompts 128] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def prompt_texts(n: int) -> list[str]:
    from trl_plus.testing import preference_rows

    rows = preference_rows()
    return [rows[i % len(rows)]["prompt"] + " " * (i % 3) for i in range(n)]


def bench_judging(n_pairs: int, batch_size: int, repeats: int = 3) -> dict:
    from trl_plus.eval.judging import run_judge
    from trl_plus.manager import Hooks

    hooks = Hooks()
    judge = hooks.components().judge({"name": "reward_model", "model": "tiny:reward-model", "batch_size": 2 * batch_size})
    prompts = prompt_texts(n_pairs)
    a = [" great . what a gem ." if i % 2 else " bad ." for i in range(n_pairs)]
    b = [" the worst ." if i % 3 else " fine and moving ." for i in range(n_pairs)]
    judge(prompts[:4], a[:4], b[:4])  # warm-up
    t_batched = t_naive = float("inf")
    for _ in range(repeats):  # best of a few: the machine is shared and noisy
        t = time.perf_counter()
        batched = run_judge(judge, "reward_model", prompts, a, b, batch_size=batch_size, progress=False)
        t_batched = min(t_batched, time.perf_counter() - t)
        t = time.perf_counter()
        naive = [judge([p], [x], [y])[0] for p, x, y in zip(prompts, a, b)]
        t_naive = min(t_naive, time.perf_counter() - t)
    agree = max(abs(u - v) for u, v in zip(batched, naive))
    return {"pairs": n_pairs, "harness_pairs_per_s": n_pairs / t_batched, "naive_pairs_per_s": n_pairs / t_naive,
            "speedup": t_naive / t_batched, "max_abs_difference": agree}


def bench_generation(n_prompts: int, max_new_tokens: int, batch_size: int, repeats: int = 3) -> dict:
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
    t_ours = t_theirs = float("inf")
    for _ in range(repeats):  # interleaved, best of a few: the machine is shared and noisy
        t = time.perf_counter()
        ours = generate(policy, prompts, settings, progress=False)  # no cache path: really samples
        t_ours = min(t_ours, time.perf_counter() - t)
        t = time.perf_counter()
        theirs = lm.generate_until(requests, disable_tqdm=True)
        t_theirs = min(t_theirs, time.perf_counter() - t)
    same = sum(x.strip() == y.strip() for x, y in zip(ours, theirs))
    return {"prompts": n_prompts, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
            "harness_prompts_per_s": n_prompts / t_ours, "lm_eval_prompts_per_s": n_prompts / t_theirs,
            "speedup": t_theirs / t_ours, "identical_completions": f"{same}/{n_prompts}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    import torch

    print(f"device: {'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, "
          f"threads {torch.get_num_threads()}")
    j = bench_judging(args.pairs, args.batch_size)
    print(f"judging    {j['pairs']} pairs: harness {j['harness_pairs_per_s']:.1f} pairs/s, one pair at a time "
          f"{j['naive_pairs_per_s']:.1f} pairs/s -> {j['speedup']:.1f}x (target >= 5x); "
          f"max |difference| {j['max_abs_difference']:.1e}")
    g = bench_generation(args.prompts, args.max_new_tokens, args.batch_size)
    print(f"generation {g['prompts']} prompts x {g['max_new_tokens']} tokens, batch {g['batch_size']}: harness "
          f"{g['harness_prompts_per_s']:.1f} prompts/s, lm-eval generate_until {g['lm_eval_prompts_per_s']:.1f} "
          f"prompts/s -> {g['speedup']:.2f}x (target >= 1.0x); identical greedy completions "
          f"{g['identical_completions']}")


if __name__ == "__main__":
    main()
