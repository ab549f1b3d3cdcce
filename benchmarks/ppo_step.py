"""Wall time of one PPO update (trl_plus.PPOTrainer) against one RLOO update (trl.RLOOTrainer).

Same tiny offline model, prompts, reward function, batch size and completion length.
One update = one optimizer step including its rollout (generation, scoring, reference
and critic forwards, loss, backward, step): ``steps_per_generation=1, num_iterations=1``.
Repetitions alternate between the two trainers (and which goes first) so that machine
load hits both alike; each repetition trains a fresh trainer for ``--steps`` steps and
the first step (warm-up) is not counted. Prints medians and their ratio.

    python benchmarks/ppo_step.py --reps 5 --steps 6
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

from _timing import iqr

from trl_plus.recipes.toy_rewards import char_share

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def letter_share(prompts, completions, **columns):
    """The toy task: share of the completion's visible characters that are the letter 'e'."""
    return char_share(prompts, completions, chars="e")


def step_times(kind: str, model_path: str, opts, workdir: str) -> list[float]:
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    import trl_plus

    rows = [json.loads(line) for line in (RECIPES / "data" / "tiny_prefs.jsonl").read_text().splitlines() if line]
    dataset = Dataset.from_list([{"prompt": r["prompt"]} for r in rows])
    common = dict(
        output_dir=os.path.join(workdir, kind),
        learning_rate=1e-3,
        per_device_train_batch_size=opts.batch_size,
        num_generations=2,
        max_completion_length=opts.completion_length,
        max_steps=opts.steps,
        logging_steps=opts.steps,
        save_strategy="no",
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        beta=0.05,
        seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if kind == "ppo":
        trainer = trl_plus.PPOTrainer(
            model, args=trl_plus.PPOConfig(**common), train_dataset=dataset, processing_class=tokenizer, rewards=[letter_share]
        )
    else:
        trainer = trl.RLOOTrainer(
            model, reward_funcs=letter_share, args=trl.RLOOConfig(**common), train_dataset=dataset, processing_class=tokenizer
        )

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    trainer.add_callback(Timer())
    trainer.train()
    return times[1:]  # the first step pays for warm-up


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7, help="repetitions per trainer (alternating; at least 7)")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per repetition (first one not timed)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--completion-length", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's choice)")
    opts = parser.parse_args(argv)

    import torch
    import transformers

    from trl_plus.tiny import ensure_tiny

    transformers.logging.set_verbosity_error()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    model_path = str(ensure_tiny("tiny:causal-lm"))
    samples: dict[str, list[float]] = {"ppo": [], "rloo": []}
    ratios = []  # per repetition: PPO's median step over RLOO's, the two measured back to back
    with tempfile.TemporaryDirectory() as workdir:
        for rep in range(max(opts.reps, 7)):
            order = ("ppo", "rloo") if rep % 2 == 0 else ("rloo", "ppo")
            this = {}
            for kind in order:
                this[kind] = step_times(kind, model_path, opts, workdir)
                samples[kind] += this[kind]
            ratios.append(statistics.median(this["ppo"]) / statistics.median(this["rloo"]))
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(
        f"tiny Llama (hidden 64, 2 layers), batch {opts.batch_size} x completion {opts.completion_length} tokens, "
        f"{max(opts.reps, 7)} alternating repetitions x {opts.steps - 1} timed steps, torch threads {torch.get_num_threads()}"
    )
    for kind in ("rloo", "ppo"):
        v = samples[kind]
        q1, q3 = iqr(v)
        print(f"  {kind:5s} median {med[kind] * 1000:8.1f} ms/update  (IQR {q1 * 1000:.1f}-{q3 * 1000:.1f} ms, n={len(v)})")
    r1, r3 = iqr(ratios)
    print(f"ratio PPO/RLOO: median {statistics.median(ratios):.2f} (IQR {r1:.2f}-{r3:.2f} over {len(ratios)} "
          "alternating repetitions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
