"""What the plugin layer costs a DPO run: trl_plus.DPOTrainer against trl.DPOTrainer.

Three measurements, in one process, on the tiny offline Llama (hidden 64, 2 layers):

(a) ``trl_plus.DPOTrainer`` with no components against ``trl.DPOTrainer``;
(b) the same with a KL schedule (adaptive), three data filters (length, dedup,
    distinct_pair) and a lifecycle plugin (trainer_created, step_end) registered;
(c) one ``Hooks.step_end`` dispatch, as the trainer makes it at every logging step,
    with 0, 1 and 20 plugins implementing ``trl_plus_step_end``.

For (a) and (b) both trainers get the same model, preference rows, batch, seed and
``logging_steps=1`` (so the trl-plus side pays its logging hook at every step). Runs
alternate between the two trainers (A B, B A, ...), each training a fresh trainer for
``--steps`` steps. A step's time is the wall time from one step's end to the next one's
(``on_step_end`` to ``on_step_end``): it holds the batch fetch, the beta schedule, the
optimizer step and the logging of the step before, so everything trl-plus adds per step
is inside it; the first step (warm-up) is never timed. Prints per trainer the median step
time with its IQR over all timed steps, and the median of the per-pair ratios (median of
a trl-plus run over median of its paired TRL run) with its IQR. The last line sums up.

    python benchmarks/dpo_overhead.py            # 9 pairs x 30 steps per configuration
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from _timing import iqr

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before torch loads: its thread pools read these at start-up.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import trl_plus  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

TARGETS = {"a": 1.02, "b": 1.05, "c_ms": 0.1}


class StepLog:
    """A light lifecycle plugin: notes that the trainer exists and keeps each step's loss."""

    def __init__(self):
        self.created = 0
        self.losses: list[tuple[int, float]] = []

    @trl_plus.hookimpl
    def trl_plus_trainer_created(self, trainer, recipe):
        self.created += 1

    @trl_plus.hookimpl
    def trl_plus_step_end(self, step, metrics):
        self.losses.append((step, metrics.get("loss")))


class Counter:
    """The smallest plugin that listens to every step."""

    def __init__(self):
        self.n = 0

    @trl_plus.hookimpl
    def trl_plus_step_end(self, trainer, step, metrics):
        self.n += 1


def preference_rows() -> list[dict]:
    """The shipped toy pairs, deduplicated and without ties, so that the filters of (b)
    drop nothing and both trainers train on exactly the same rows."""
    seen, rows = set(), []
    for line in (RECIPES / "data" / "tiny_prefs.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        key = (row["prompt"], row["chosen"], row["rejected"])
        if key in seen or row["chosen"] == row["rejected"]:
            continue
        seen.add(key)
        rows.append(row)
    return rows


def components(config: str) -> dict:
    if config == "a":
        return {}
    return {
        "kl": {"name": "adaptive", "init": 0.1, "target": 6.0, "horizon": 10000},
        "filters": [
            {"name": "length", "max_prompt_tokens": 48, "max_completion_tokens": 32},
            {"name": "dedup"},
            {"name": "distinct_pair"},
        ],
    }


def run_dpo(side: str, config: str, model_path: str, rows: list[dict], opts, workdir: str) -> dict:
    """Train one fresh trainer; its timed step times and logged losses."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    args = trl.DPOConfig(
        output_dir=os.path.join(workdir, f"{side}-{config}"),
        per_device_train_batch_size=opts.batch_size,
        max_steps=opts.steps,
        learning_rate=1e-3,
        max_length=64,
        logging_steps=1,
        save_strategy="no",
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    dataset = Dataset.from_list(rows)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    ref = AutoModelForCausalLM.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    plugin = None
    if side == "trl":
        trainer = trl.DPOTrainer(model, ref, args=args, train_dataset=dataset, processing_class=tokenizer)
    else:
        # Without entry points: the figures describe only the components named here.
        hooks = trl_plus.Hooks(trl_plus.get_plugin_manager(autoload=False))
        if config == "b":
            plugin = StepLog()
            hooks.pm.register(plugin, name="step-log")
        trainer = trl_plus.DPOTrainer(
            model, ref, args=args, train_dataset=dataset, processing_class=tokenizer, plugin_manager=hooks,
            **components(config),
        )
    if len(trainer.train_dataset) != len(rows):
        raise SystemExit(f"{side} trains on {len(trainer.train_dataset)} rows, not {len(rows)}: the work differs")

    ends: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    # the printed log rows would time the terminal, and trl-plus rows carry more keys
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Timer())
    gc.collect()
    trainer.train()
    if plugin is not None:
        # the Trainer's closing summary row is logged in train mode too, without a "loss"
        stepped = sum(loss is not None for _, loss in plugin.losses)
        if plugin.created != 1 or stepped != opts.steps:
            raise SystemExit(f"the lifecycle plugin saw {plugin.created} trainers and {stepped} steps")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"times": [b - a for a, b in zip(ends, ends[1:])], "losses": losses}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q3 = iqr(values)
    return q1, statistics.median(values), q3


def compare(config: str, model_path: str, rows: list[dict], opts, workdir: str) -> float:
    samples: dict[str, list[float]] = {"trl": [], "trl_plus": []}
    ratios: list[float] = []
    max_loss_diff = 0.0
    for pair in range(opts.pairs):
        order = ("trl", "trl_plus") if pair % 2 == 0 else ("trl_plus", "trl")
        runs = {side: run_dpo(side, config, model_path, rows, opts, workdir) for side in order}
        for side, run in runs.items():
            samples[side] += run["times"]
        ratios.append(statistics.median(runs["trl_plus"]["times"]) / statistics.median(runs["trl"]["times"]))
        if config == "a":  # no schedule: the same beta, so the same losses if the work is the same
            a, b = runs["trl"]["losses"], runs["trl_plus"]["losses"]
            max_loss_diff = max([max_loss_diff] + [abs(x - y) for x, y in zip(a, b)])
    label = {"a": "(a) no components", "b": "(b) adaptive KL + 3 filters + lifecycle plugin"}[config]
    print(f"{label}: {opts.pairs} pairs x {opts.steps - 1} timed steps")
    for side in ("trl", "trl_plus"):
        q1, med, q3 = quartiles(samples[side])
        print(f"  {side:9s} median {med * 1000:7.2f} ms/step  (IQR {q1 * 1000:.2f}-{q3 * 1000:.2f}, n={len(samples[side])})")
    q1, med, q3 = quartiles(ratios)
    if config == "a":
        print(f"  logged losses, max |trl_plus - trl| over all pairs: {max_loss_diff:.2e}")
    print(f"  ratio trl_plus/trl, median of {len(ratios)} pairs: {med:.3f}  (IQR {q1:.3f}-{q3:.3f}; "
          f"pairs: {' '.join(f'{r:.3f}' for r in ratios)})  target <= {TARGETS[config]}")
    return med


def dispatch_cost(n_plugins: int, calls: int, repeats: int) -> tuple[float, float, float]:
    """Seconds per ``hooks.step_end`` call, made as the trainer makes it (a copy of the logs)."""
    hooks = trl_plus.Hooks(trl_plus.get_plugin_manager(autoload=False))
    plugins = [Counter() for _ in range(n_plugins)]
    for i, plugin in enumerate(plugins):
        hooks.pm.register(plugin, name=f"counter-{i}")
    # a DPO log row: what the trainer passes at every logging step
    logs = {key: 0.5 for key in (
        "loss", "grad_norm", "learning_rate", "entropy", "num_tokens", "logits/chosen", "logits/rejected",
        "mean_token_accuracy", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
        "logps/chosen", "logps/rejected", "epoch", "beta", "kl_proxy",
    )}
    trainer = object()
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for step in range(calls):
            hooks.step_end(trainer=trainer, step=step, metrics=dict(logs))
        per_call.append((time.perf_counter() - start) / calls)
    if any(p.n != calls * repeats for p in plugins):
        raise SystemExit("a plugin missed calls")
    return quartiles(per_call)


def schedule_cost(calls: int, repeats: int, logged_steps: int = 10) -> tuple[float, float, float]:
    """Seconds per ``DPOTrainer._apply_schedule``, the other per-step trl-plus work: the
    adaptive schedule fed the measured stats, with ``logged_steps`` steps of metrics
    gathered since the last log (``DPOConfig``'s default ``logging_steps`` is 10)."""
    import types

    from trl_plus.trainers.dpo import DPOTrainer

    hooks = trl_plus.Hooks(trl_plus.get_plugin_manager(autoload=False))
    stand_in = types.SimpleNamespace(beta=0.1, _kl_stats={})
    stand_in.kl_schedule = hooks.components().kl_schedule(components("b")["kl"])
    stand_in._metrics = {"train": {key: [0.01 * (i + 1) for i in range(logged_steps)] for key in (
        "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")}}
    stand_in._measured_stats = types.MethodType(DPOTrainer._measured_stats, stand_in)
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for step in range(calls):
            DPOTrainer._apply_schedule(stand_in, step)
        per_call.append((time.perf_counter() - start) / calls)
    return quartiles(per_call)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=9, help="interleaved trl/trl_plus pairs per configuration")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run (the first one not timed)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--calls", type=int, default=20000, help="hook dispatches per repeat in (c)")
    parser.add_argument("--repeats", type=int, default=7, help="repeats of the dispatch loop in (c)")
    opts = parser.parse_args(argv)
    if opts.steps < 3:
        parser.error("--steps must be at least 3 (the first step is not timed)")

    import torch
    import transformers

    from trl_plus.tiny import ensure_tiny

    import datasets

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # the same two warnings on both sides at every run; they would bury the figures
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    torch.set_num_threads(1)
    model_path = str(ensure_tiny("tiny:causal-lm"))
    rows = preference_rows()
    print(f"tiny Llama (hidden 64, 2 layers), {len(rows)} preference rows, batch {opts.batch_size}, max_length 64, "
          f"logging every step, torch threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    ratios = {}
    with tempfile.TemporaryDirectory() as workdir:
        # one untimed pair: first-use costs (lazy imports, allocator growth) land on neither side
        warm = argparse.Namespace(**{**vars(opts), "steps": 3})
        for side in ("trl", "trl_plus"):
            run_dpo(side, "b", model_path, rows, warm, workdir)
        for config in ("a", "b"):
            ratios[config] = compare(config, model_path, rows, opts, workdir)

    print(f"(c) one hooks.step_end dispatch (logs copied, as the trainer does), {opts.repeats} x {opts.calls} calls")
    costs = {}
    for n in (0, 1, 20):
        q1, med, q3 = dispatch_cost(n, opts.calls, opts.repeats)
        costs[n] = med
        print(f"  {n:2d} plugins: {med * 1e6:7.2f} us/call  (IQR {q1 * 1e6:.2f}-{q3 * 1e6:.2f})")
    print(f"  target < {TARGETS['c_ms'] * 1000:.0f} us per step with 20 plugins")
    q1, med, q3 = schedule_cost(opts.calls, opts.repeats)
    print(f"  for scale, the beta schedule's per-step work (adaptive, 10 steps of stats): {med * 1e6:.2f} us/step "
          f"(IQR {q1 * 1e6:.2f}-{q3 * 1e6:.2f})")
    c_ms = costs[20] * 1000
    verdict = "ok" if ratios["a"] <= TARGETS["a"] and ratios["b"] <= TARGETS["b"] and c_ms < TARGETS["c_ms"] else "OVER"
    print(f"summary: (a) {ratios['a']:.3f} (<= {TARGETS['a']})  (b) {ratios['b']:.3f} (<= {TARGETS['b']})  "
          f"(c) {c_ms:.4f} ms/dispatch with 20 plugins (< {TARGETS['c_ms']})  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
