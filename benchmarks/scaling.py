"""How step time and memory grow with sequence length and batch size, for
``trl_plus.DPOTrainer`` and ``trl_plus.PPOTrainer`` on the tiny model.

Each configuration trains in its own subprocess (so memory peaks never mix) for a few
optimizer steps; the step time is the median over the steps after the first (the first
carries one-off set-up), the memory is the peak resident set of the process less its
resident set after imports (what training itself added). One dimension varies at a time
around a middle configuration:

- DPO: ``max_length`` (rows are built to fill it) and ``per_device_train_batch_size``;
- PPO: ``max_completion_length`` (the tiny model rarely stops early, so completions run to
  it) and ``per_device_train_batch_size`` (rows per rollout, 2 completions per prompt).

    python benchmarks/scaling.py [--steps 6] [--repeats 7] [--hidden-size 64 --layers 2] [--threads 1]

The configurations are interleaved: each of ``--repeats`` rounds runs every configuration
once, and a configuration's time and memory ratios to the smallest one are taken within
each round, so a machine that slows down between rounds slows both sides of a ratio
alike. Prints one table per trainer (medians over rounds, the time ratio's interquartile
range beside it); the last line sums up how they grow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _children import MIB, RESULT, letter_share, run_child, save_stand_in, status_kib  # noqa: E402
from _timing import MIN_REPEATS, iqr  # noqa: E402
DPO_LENGTHS, DPO_BATCHES = (64, 128, 256), (8, 16, 32)
PPO_LENGTHS, PPO_BATCHES = (16, 32, 64), (8, 16, 32)


def _words(n: int, offset: int) -> str:
    vocab = ("great", "bad", "film", "plot", "fine", "dull", "moving", "the", "a", "and")
    return " ".join(vocab[(offset + 3 * i) % len(vocab)] for i in range(n))


def preference_rows(max_length: int, n: int = 96) -> list[dict]:
    """Rows whose prompt + completion fill about ``max_length`` tokens (a word is a token or two)."""
    words = max(2, max_length // 3)
    return [{"prompt": "review " + _words(words // 3, i), "chosen": " " + _words(words, i + 1),
             "rejected": " " + _words(words, i + 2)} for i in range(n)]


def child(kind: str, model_path: str, steps: int, batch: int, length: int, threads: int) -> dict:
    """Train ``kind`` for ``steps`` steps in this process; its step times and memory."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    import trl_plus

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(threads)
    rss_imported = status_kib("VmRSS") * 1024
    workdir = tempfile.mkdtemp(prefix=f"scaling-{kind}-")
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    common = dict(output_dir=workdir, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-3,
                  logging_steps=steps, save_strategy="no", bf16=False, report_to="none", disable_tqdm=True, seed=0)
    if kind == "dpo":
        args = trl_plus.DPOConfig(max_length=length, **common)
        trainer = trl_plus.DPOTrainer(model, args=args, train_dataset=Dataset.from_list(preference_rows(length)),
                                      processing_class=tokenizer)
        tokens_per_step = batch * 2 * length  # chosen and rejected, padded to the longest
    else:
        args = trl_plus.PPOConfig(num_generations=2, max_completion_length=length, beta=0.05, **common)
        prompts = Dataset.from_list([{"prompt": "review " + _words(4, i)} for i in range(96)])
        trainer = trl_plus.PPOTrainer(model, args=args, train_dataset=prompts, processing_class=tokenizer,
                                      rewards=[letter_share])
        tokens_per_step = batch * length  # completion tokens per rollout row
    trainer.add_callback(Stamp())
    start = time.perf_counter()
    trainer.train()
    steps_s = [b - a for a, b in zip([start] + stamps[:-1], stamps)][1:]
    return {"kind": kind, "batch": batch, "length": length, "step_s": statistics.median(steps_s),
            "tokens_per_step": tokens_per_step, "rss_imported": rss_imported,
            "peak_rss": status_kib("VmHWM") * 1024}


def table(kind: str, label: str, rounds: list[list[dict]]) -> tuple[float, float, tuple, float]:
    """Print one trainer's rows (``rounds``: per configuration, its result in every round);
    returns the growth from the smallest configuration to the largest: tokens, median time
    ratio, its quartiles, median memory ratio."""
    mem = [[r["peak_rss"] - r["rss_imported"] for r in results] for results in rounds]
    print(f"\n{kind.upper()}  | batch | {label} | step s | x (IQR) | tokens/s (batch x length) | training memory MiB | x |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    out = []
    for results, m in zip(rounds, mem):
        r = results[0]
        t_ratio = [a["step_s"] / b["step_s"] for a, b in zip(results, rounds[0])]
        m_ratio = [a / b for a, b in zip(m, mem[0])]
        step = statistics.median(x["step_s"] for x in results)
        lo, hi = iqr(t_ratio, method="inclusive")
        print(f"| {kind} | {r['batch']} | {r['length']} | {step:.3f} | {statistics.median(t_ratio):.2f} ({lo:.2f}-{hi:.2f}) "
              f"| {r['tokens_per_step'] / step:,.0f} | {statistics.median(m) / MIB:.1f} | {statistics.median(m_ratio):.2f} |")
        out.append((r["tokens_per_step"], statistics.median(t_ratio), (lo, hi), statistics.median(m_ratio)))
    top = max(out, key=lambda o: o[0])
    return top[0] / out[0][0], top[1], top[2], top[3]


def configurations(lengths, batches) -> list[tuple[int, int]]:
    """(batch, length): lengths at the middle batch, then batches at the middle length."""
    mid_b, mid_l = batches[1], lengths[1]
    out = [(mid_b, n) for n in lengths] + [(b, mid_l) for b in batches if b != mid_b]
    return sorted(out, key=lambda c: c[0] * c[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per configuration and round")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds over every configuration (at least 7)")
    parser.add_argument("--hidden-size", type=int, default=64, help="64 with 2 layers: the shipped tiny model")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="dpo,ppo")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.repeats < MIN_REPEATS:
        parser.error(f"--repeats: at least {MIN_REPEATS} interleaved rounds")
    if opts.build:
        save_stand_in(opts.build, opts.hidden_size, opts.layers, max_len=512)
        return 0
    if opts.child:
        print(RESULT + json.dumps(child(opts.child, opts.model, opts.steps, opts.batch, opts.length, opts.threads)))
        return 0
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        model_path = os.path.join(tmp, "model")
        run_child(__file__, ["--build", model_path, "--hidden-size", str(opts.hidden_size), "--layers", str(opts.layers)])
        print(f"Llama hidden {opts.hidden_size}, {opts.layers} layers, {opts.steps} steps per configuration "
              f"(median step after the first), {opts.threads} torch thread(s), one subprocess each, "
              f"{opts.repeats} interleaved rounds")
        plans = {"dpo": ("max_length", DPO_LENGTHS, DPO_BATCHES),
                 "ppo": ("max_completion_length", PPO_LENGTHS, PPO_BATCHES)}
        for kind in opts.only.split(","):
            label, lengths, batches = plans[kind]
            configs = configurations(lengths, batches)
            rounds: list[list[dict]] = [[] for _ in configs]
            for _ in range(opts.repeats):  # A B C ... A B C ...: every round runs every configuration
                for i, (b, n) in enumerate(configs):
                    rounds[i].append(run_child(__file__, ["--child", kind, "--model", model_path, "--steps",
                                                          str(opts.steps), "--batch", str(b), "--length", str(n),
                                                          "--threads", str(opts.threads)]))
            n, t, (lo, hi), m = table(kind, label, rounds)
            summary.append(f"{kind}: {n:.0f}x the tokens per step costs {t:.2f}x the step time (IQR {lo:.2f}-{hi:.2f}) "
                           f"and {m:.2f}x the training memory")
    print("\nsummary: " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
