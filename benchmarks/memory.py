"""Peak memory of trl-plus trainers against the TRL trainers they extend.

Each run is its own subprocess, so peaks never mix, and reports the peak resident set
of its own process (``VmHWM``; ``ru_maxrss`` as a cross-check). The parent imports no
torch: a child's ``ru_maxrss`` can inherit the parent's peak through fork and exec, and
a small parent keeps that below every child's own.

- DPO: ``trl_plus.DPOTrainer`` with the components of ``dpo_overhead.py``'s
  configuration (b) (adaptive KL, length + dedup + distinct_pair filters, a lifecycle
  plugin) against ``trl.DPOTrainer``, same model, rows, batch, seed and steps.
- PPO: ``trl_plus.PPOTrainer`` against ``trl.RLOOTrainer`` set up as in ``ppo_step.py``
  (same prompts, Python reward, batch, completion length, beta). PPO also holds a critic;
  its share is computed (parameters, gradients and AdamW state, in bytes) and compared
  with the measured difference of the two peaks.

Runs alternate between the trainers of each pair (and which goes first). Prints medians
of the peaks and their ratios; the last line sums up.

    python benchmarks/memory.py --reps 3 --steps 10
    python benchmarks/memory.py --reps 3 --steps 4 --hidden-size 512 --layers 4   # a critic that shows
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _children import MIB, RESULT, letter_share, run_child, save_stand_in, status_kib  # noqa: E402


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def child(kind: str, model_path: str, steps: int, batch_size: int) -> dict:
    """One training run in this process; its memory figures."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import importlib
    import resource

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Each side imports the one trainer it runs before the "after imports" figure (TRL's
    # lazy modules would otherwise load inside training); trl-plus pays for its own code.
    import trl_plus

    if kind == "trl_dpo":
        trl.DPOTrainer  # noqa: B018
    elif kind == "rloo":
        trl.RLOOTrainer  # noqa: B018
    else:
        importlib.import_module("trl_plus.trainers." + ("dpo" if kind == "trl_plus_dpo" else "ppo"))

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    rss_imported = status_kib("VmRSS") * 1024
    workdir = tempfile.mkdtemp(prefix=f"mem-{kind}-")
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    info: dict = {"kind": kind}
    if kind in ("trl_dpo", "trl_plus_dpo"):
        sys.path.insert(0, str(HERE))
        from dpo_overhead import StepLog, components, preference_rows

        rows = preference_rows()
        args = trl.DPOConfig(
            output_dir=workdir, per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=1e-3,
            max_length=64, logging_steps=1, save_strategy="no", bf16=False, activation_checkpointing=False,
            report_to="none", disable_tqdm=True, seed=0,
        )
        ref = AutoModelForCausalLM.from_pretrained(model_path)
        dataset = Dataset.from_list(rows)
        if kind == "trl_dpo":
            trainer = trl.DPOTrainer(model, ref, args=args, train_dataset=dataset, processing_class=tokenizer)
        else:
            hooks = trl_plus.Hooks(trl_plus.get_plugin_manager(autoload=False))
            hooks.pm.register(StepLog(), name="step-log")
            trainer = trl_plus.DPOTrainer(
                model, ref, args=args, train_dataset=dataset, processing_class=tokenizer, plugin_manager=hooks,
                **components("b"),
            )
        if len(trainer.train_dataset) != len(rows):
            raise SystemExit(f"{kind} trains on {len(trainer.train_dataset)} rows, not {len(rows)}")
    else:
        rows = [json.loads(line) for line in (HERE.parent / "recipes" / "data" / "tiny_prefs.jsonl").read_text().splitlines() if line]
        dataset = Dataset.from_list([{"prompt": r["prompt"]} for r in rows])
        common = dict(
            output_dir=workdir, learning_rate=1e-3, per_device_train_batch_size=batch_size, num_generations=2,
            max_completion_length=16, max_steps=steps, logging_steps=steps, save_strategy="no", bf16=False,
            report_to="none", disable_tqdm=True, beta=0.05, seed=0,
        )
        if kind == "ppo":
            trainer = trl_plus.PPOTrainer(
                model, args=trl_plus.PPOConfig(**common), train_dataset=dataset, processing_class=tokenizer,
                rewards=[letter_share],
            )
        else:
            trainer = trl.RLOOTrainer(
                model, reward_funcs=letter_share, args=trl.RLOOConfig(**common), train_dataset=dataset,
                processing_class=tokenizer,
            )
    start = time.perf_counter()
    trainer.train()
    info["train_s"] = time.perf_counter() - start
    info["policy_params"] = sum(p.numel() for p in trainer.model.parameters())
    if kind == "ppo":
        params = [p for p in trainer.critic.parameters() if p.requires_grad]
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        state = [t for p in params for t in optimizer.state.get(p, {}).values() if torch.is_tensor(t)]
        info["critic_params"] = sum(p.numel() for p in params)
        info["critic_weight_bytes"] = _tensor_bytes(params)
        # the gradients are freed after each optimizer step, but they exist at every backward's end
        info["critic_grad_bytes"] = _tensor_bytes(params)
        info["critic_optimizer_bytes"] = _tensor_bytes(state)
    info["rss_imported"] = rss_imported
    info["peak_rss"] = status_kib("VmHWM") * 1024
    info["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return info


def mib(value: float) -> str:
    return f"{value / MIB:.1f} MiB"


def report(label: str, runs: dict[str, list[dict]], kinds: tuple[str, str]) -> float:
    base, ours = kinds
    print(label)
    med = {}
    for kind in kinds:
        peaks = [r["peak_rss"] for r in runs[kind]]
        imported = statistics.median(r["rss_imported"] for r in runs[kind])
        med[kind] = statistics.median(peaks)
        print(f"  {kind:13s} peak RSS median {mib(med[kind])}  (runs: {', '.join(f'{p / MIB:.1f}' for p in peaks)}; "
              f"ru_maxrss max {mib(max(r['ru_maxrss'] for r in runs[kind]))}); after imports {mib(imported)}, "
              f"training adds {mib(med[kind] - imported)}")
    ratio = med[ours] / med[base]
    print(f"  ratio {ours}/{base} peak RSS: {ratio:.3f}  (difference {mib(med[ours] - med[base])})")
    return ratio


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="runs per trainer (alternating, one subprocess each)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=64, help="64 with 2 layers: the shipped tiny model")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.build:
        save_stand_in(opts.build, opts.hidden_size, opts.layers)
        return 0
    if opts.child:
        print(RESULT + json.dumps(child(opts.child, opts.model, opts.steps, opts.batch_size)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        if (opts.hidden_size, opts.layers) == (64, 2):
            code = "from trl_plus.tiny import ensure_tiny; print(ensure_tiny('tiny:causal-lm'))"
            model_path = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                        env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout.strip().splitlines()[-1]
        else:
            model_path = os.path.join(tmp, "model")
            run_child(__file__, ["--build", model_path, "--hidden-size", str(opts.hidden_size), "--layers", str(opts.layers)])
        runs: dict[str, list[dict]] = {k: [] for k in ("trl_dpo", "trl_plus_dpo", "rloo", "ppo")}
        for rep in range(opts.reps):
            for pair in (("trl_dpo", "trl_plus_dpo"), ("rloo", "ppo")):
                for kind in pair if rep % 2 == 0 else pair[::-1]:
                    runs[kind].append(run_child(__file__, ["--child", kind, "--model", model_path, "--steps", str(opts.steps),
                                                 "--batch-size", str(opts.batch_size)]))
    params = runs["ppo"][0]["policy_params"]
    print(f"Llama hidden {opts.hidden_size}, {opts.layers} layers ({params:,} policy parameters), batch {opts.batch_size}, "
          f"{opts.steps} steps, {opts.reps} alternating runs per trainer, one subprocess each, 1 torch thread")
    dpo = report("DPO (dpo_overhead.py's configuration (b) against plain TRL):", runs, ("trl_dpo", "trl_plus_dpo"))
    ppo = report("PPO against RLOO (ppo_step.py's setup; completions of 16 tokens, 2 per prompt):", runs, ("rloo", "ppo"))
    c = runs["ppo"][0]
    critic = c["critic_weight_bytes"] + c["critic_grad_bytes"] + c["critic_optimizer_bytes"]
    measured = statistics.median(r["peak_rss"] for r in runs["ppo"]) - statistics.median(r["peak_rss"] for r in runs["rloo"])
    print(f"  critic: {c['critic_params']:,} parameters; weights {mib(c['critic_weight_bytes'])} + gradients "
          f"{mib(c['critic_grad_bytes'])} + AdamW state {mib(c['critic_optimizer_bytes'])} = {mib(critic)} computed; "
          f"PPO - RLOO peak RSS {mib(measured)} measured (the rest: the critic's activations, and noise)")
    print(f"summary: DPO trl_plus/trl peak RSS {dpo:.3f} (target <= 1.05); PPO/RLOO {ppo:.3f} "
          f"(critic {mib(critic)} computed, {mib(measured)} measured)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
