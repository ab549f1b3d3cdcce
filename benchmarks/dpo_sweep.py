"""Wall time of a DPO beta sweep with the reference log-prob cache against the same sweep without it.

A sweep is what ``trl-plus compare`` runs for its DPO stage: one ``train_from_recipe`` per
beta (model and reference loading, tokenisation, training, saving), same SFT model, same
pairs, same seed. With the cache every run's recipe sets ``dpo.ref_logps_cache`` to one
folder, fresh for each repetition: the first beta computes the reference log-probs once
(TRL's precompute), the others load them; without it, every step of every run runs the
reference forward, as before. Repetitions alternate between the two sweeps (and which goes
first). Prints each repetition's times, whether the logged losses were identical, and, as
the last line, the median ratio cached / uncached with its interquartile range.

    python benchmarks/dpo_sweep.py --reps 7
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _timing import iqr

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def make_model(path: Path, hidden: int, layers: int) -> Path:
    from trl_plus.tiny import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model("causal-lm", tokenizer, seed=0, hidden_size=hidden, num_layers=layers)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_pairs(path: Path, n: int) -> Path:
    """``n`` distinct pairs of a few sentences each, from the shipped toy reviews."""
    rows = [json.loads(line) for line in (RECIPES / "data" / "tiny_prefs.jsonl").read_text().splitlines() if line]
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            a, b, c = rng.sample(rows, 3)
            prompt = f"{a['prompt']}{a['chosen']} {b['prompt']}{b['rejected']} {c['prompt']}"
            chosen = f"{c['chosen']} {a['chosen'].strip()} {i % 10}"
            rejected = f"{c['rejected']} {b['rejected'].strip()} {i % 10}"
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
    return path


def sweep(model: Path, pairs: Path, out: Path, opts, cache: Path | None) -> tuple[float, dict]:
    from trl_plus.recipe import validate_dict
    from trl_plus.trainers.dpo import train_from_recipe

    losses, started = {}, time.perf_counter()
    for beta in opts.betas:
        args = dict(
            beta=beta, seed=0, learning_rate=1e-4, per_device_train_batch_size=opts.batch_size,
            num_train_epochs=opts.epochs, max_length=opts.max_length, lr_scheduler_type="constant",
            logging_steps=1, weight_decay=0.0, save_strategy="no", disable_tqdm=True,
        )
        if cache is not None:
            args["ref_logps_cache"] = str(cache)
        recipe = validate_dict({"trainer": "dpo", "model": {"name_or_path": str(model)},
                                "data": {"train": {"path": str(pairs)}}, "dpo": args})
        with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints every logged step
            trainer = train_from_recipe(recipe, str(out / f"beta{beta:g}"))
        losses[beta] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        del trainer
    return time.perf_counter() - started, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5])
    # Defaults: the pipeline's DPO defaults (3 epochs, batch 32, max_length 64).
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args()

    import datasets
    import torch
    import transformers

    torch.set_num_threads(opts.threads)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    # Map results must not outlive a run: otherwise TRL's own Arrow cache of precomputed
    # log-probs (keyed by the dataset's fingerprint) would serve the cached sweep's misses.
    datasets.disable_caching()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_model(tmp / "sft", opts.hidden, opts.layers)
        pairs = make_pairs(tmp / "pairs.jsonl", opts.pairs)
        steps = -(-opts.pairs // opts.batch_size) * opts.epochs
        print(f"setting: tiny Llama hidden {opts.hidden} x {opts.layers} layers, {opts.pairs} pairs, "
              f"batch {opts.batch_size}, {steps:g} steps per beta, betas {opts.betas}, max_length {opts.max_length}, "
              f"{opts.threads} torch thread(s), torch {torch.__version__}")
        sweep(model, pairs, tmp / "warmup", opts, None)  # imports, kernels, file caches
        times = {"cached": [], "uncached": []}
        identical, worst = True, 0.0
        for rep in range(opts.reps):
            order = ["cached", "uncached"] if rep % 2 == 0 else ["uncached", "cached"]
            got = {}
            for kind in order:
                cache = tmp / f"ref_logps-{rep}" if kind == "cached" else None
                seconds, got[kind] = sweep(model, pairs, tmp / f"{kind}-{rep}", opts, cache)
                times[kind].append(seconds)
            same = got["cached"] == got["uncached"]
            identical &= same
            diff = max(abs(a - b) / abs(b) for beta in opts.betas for a, b in zip(got["cached"][beta], got["uncached"][beta]))
            worst = max(worst, diff)
            print(f"rep {rep}: cached {times['cached'][-1]:.2f} s, uncached {times['uncached'][-1]:.2f} s, "
                  f"ratio {times['cached'][-1] / times['uncached'][-1]:.3f}, losses identical: {same} "
                  f"(largest relative difference {diff:.1e})", flush=True)

    ratios = [c / u for c, u in zip(times["cached"], times["uncached"])]
    q1, q3 = iqr(ratios)
    print(f"cached sweep median {statistics.median(times['cached']):.2f} s, "
          f"uncached sweep median {statistics.median(times['uncached']):.2f} s")
    print(f"losses identical in every repetition (all betas, every logged step): {identical}; "
          f"largest relative difference {worst:.1e}")
    print(f"median ratio cached/uncached {statistics.median(ratios):.3f} (IQR {q1:.3f}-{q3:.3f}, {len(ratios)} reps)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
