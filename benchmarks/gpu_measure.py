"""The GPU check's measurements, one part per process (``gpu_check.py`` runs them; each
prints one ``RESULT {json}`` line):

- ``dpo``: tokens/s of ``trl_plus.DPOTrainer`` against ``trl.DPOTrainer``;
- ``ppo``: step time and peak memory of ``trl_plus.PPOTrainer`` against ``trl.RLOOTrainer``;
- ``quickstart``: ``trl-plus quickstart`` end to end, its wall time and peak memory;
- ``engines`` (not run by default): ``trl-plus launch tiny-ppo`` on one process under each
  sharding engine (FSDP, DeepSpeed ZeRO-2 and ZeRO-3 when deepspeed is installed), then
  ``--resume`` from its last checkpoint to further steps.

Both sides of a pair get the same randomly initialised Llama (built once per check from a
``LlamaConfig``, saved beside the runs, bf16 on a GPU), the same rows, batch, seed,
generation settings and logging (every step). Runs alternate between the two sides (A B,
then B A, ...); each trains a fresh trainer, and its first steps are not timed. A step is
the wall time from one ``on_step_end`` to the next, after a device synchronisation, so it
holds everything either trainer does per step. Peak memory is the device's peak allocation
over a whole run (the process's peak resident set on CPU), reset before each run.

    python benchmarks/gpu_measure.py dpo ppo --workdir DIR --sizes '{...}' --device cuda
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _children import RESULT, letter_share, status_kib  # noqa: E402
from _timing import iqr  # noqa: E402

# -- the model -------------------------------------------------------------------------------

LETTERS = "etaoinshrdlcumwfgypbvkjxqz"


def pseudo_words(n: int = 40000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(LETTERS, k=rng.randint(3, 8))) for _ in range(n)]


def words_text(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choices(words, k=n))


def build(folder: Path, m: dict, device: str) -> dict:
    """The check's tokenizer (byte-level BPE trained on pseudo-words to ``vocab_size``) and
    a randomly initialised Llama, saved to ``folder`` once; what was built."""
    info_file = folder / "gpu_check_model.json"
    if info_file.exists():
        return json.loads(info_file.read_text())
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trl_plus.tiny import build_tokenizer

    started = time.perf_counter()
    rng = random.Random(1)
    words = pseudo_words()
    corpus = [words_text(rng, words, 16) for _ in range(12000)] if m["vocab_size"] > 1000 else None
    tokenizer = build_tokenizer(corpus, vocab_size=m["vocab_size"])
    tokenizer.model_max_length = m["max_len"]
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=m["hidden_size"], intermediate_size=m["intermediate_size"],
        num_hidden_layers=m["num_layers"], num_attention_heads=m["num_heads"], num_key_value_heads=m["num_kv_heads"],
        max_position_embeddings=m["max_len"], pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it trains: seconds on a GPU, minutes for 0.5B on a CPU
        model = LlamaForCausalLM(config)
    model.to(torch.bfloat16 if device == "cuda" else torch.float32)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info = {**m, "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
            "dtype": str(model.dtype).replace("torch.", ""), "build_s": round(time.perf_counter() - started, 1)}
    del model
    release(device)
    info_file.write_text(json.dumps(info))
    return info


# -- one run -----------------------------------------------------------------------------------


def release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
        return
    try:  # the kernel resets the process's peak resident set (VmHWM) on "5"
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated()
    return status_kib("VmHWM") * 1024


def train_args(config_cls, workdir: Path, name: str, s: dict, device: str, **extra):
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config_cls)}
    no_checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return config_cls(
        output_dir=str(workdir / name), per_device_train_batch_size=s["batch_size"], max_steps=s["steps"],
        learning_rate=1e-5, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
        bf16=device == "cuda", use_cpu=device == "cpu", model_init_kwargs={"dtype": "bfloat16" if device == "cuda" else "float32"},
        **{no_checkpointing: False}, **extra,
    )


def timed_train(trainer, device: str, untimed: int) -> list[float]:
    """Train; the seconds between consecutive step ends, less the first ``untimed``."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    sync = __import__("torch").cuda.synchronize if device == "cuda" else (lambda: None)
    ends: list[float] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            sync()
            ends.append(time.perf_counter())

    trainer.remove_callback(PrinterCallback)  # printed log rows would time the terminal
    trainer.add_callback(StepEnds())
    trainer.train()
    return [b - a for a, b in zip(ends, ends[1:])][untimed:]


def run_dpo(side: str, model_dir: str, rows: list[dict], s: dict, device: str, workdir: Path) -> dict:
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer

    import trl_plus

    release(device)
    reset_peak(device)
    args = train_args(trl.DPOConfig, workdir, f"dpo-{side}", s, device, max_length=s["max_length"])
    cls = trl.DPOTrainer if side == "trl" else trl_plus.DPOTrainer
    trainer = cls(model_dir, args=args, train_dataset=Dataset.from_list(rows),
                  processing_class=AutoTokenizer.from_pretrained(model_dir))
    data, limit = trainer.train_dataset, s["max_length"]
    per_row = statistics.mean(
        min(len(p) + len(c), limit) + min(len(p) + len(r), limit)
        for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"]))
    times = timed_train(trainer, device, s["untimed"])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out = {"times": times, "tokens_per_step": per_row * s["batch_size"], "peak_bytes": peak_bytes(device),
           "losses": losses}
    del trainer, data
    release(device)
    return out


def run_ppo(side: str, model_dir: str, prompts: list[dict], s: dict, device: str, workdir: Path) -> dict:
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer

    import trl_plus

    release(device)
    reset_peak(device)
    common = dict(num_generations=2, max_completion_length=s["completion_length"], beta=0.05)
    dataset, tokenizer = Dataset.from_list(prompts), AutoTokenizer.from_pretrained(model_dir)
    if side == "ppo":
        args = train_args(trl_plus.PPOConfig, workdir, "ppo", s, device, **common)
        trainer = trl_plus.PPOTrainer(model_dir, args=args, train_dataset=dataset, processing_class=tokenizer,
                                      rewards=[letter_share])
    else:
        args = train_args(trl.RLOOConfig, workdir, "rloo", s, device, **common)
        trainer = trl.RLOOTrainer(model_dir, reward_funcs=letter_share, args=args, train_dataset=dataset,
                                  processing_class=tokenizer)
    times = timed_train(trainer, device, s["untimed"])
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    out = {"times": times, "peak_bytes": peak_bytes(device),
           "completion_length": statistics.mean(lengths) if lengths else None}
    del trainer
    release(device)
    return out


# -- the parts -----------------------------------------------------------------------------------


def alternate(run, sides: tuple[str, str], repeats: int) -> dict[str, list[dict]]:
    """``run(side)`` for each side, ``repeats`` times, the order flipped every repeat."""
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for rep in range(repeats):
        for side in sides if rep % 2 == 0 else sides[::-1]:
            runs[side].append(run(side))
    return runs


def summary(values: list[float], digits: int = 3) -> dict:
    q1, q3 = iqr(values)
    return {"median": round(statistics.median(values), digits), "iqr": [round(q1, digits), round(q3, digits)]}


def part_dpo(model_dir: str, sizes: dict, device: str, workdir: Path) -> dict:
    s, words, rng = sizes["dpo"], pseudo_words(), random.Random(2)
    # completions long enough that every sequence fills max_length: each step is the same work
    rows = [{"prompt": words_text(rng, words, s["prompt_words"]), "chosen": " " + words_text(rng, words, s["max_length"] // 2),
             "rejected": " " + words_text(rng, words, s["max_length"] // 2)} for _ in range(s["batch_size"] * s["steps"])]
    runs = alternate(lambda side: run_dpo(side, model_dir, rows, s, device, workdir), ("trl", "trl_plus"), s["repeats"])
    rate = {side: [r["tokens_per_step"] / statistics.median(r["times"]) for r in rs] for side, rs in runs.items()}
    ratios = [ours / theirs for ours, theirs in zip(rate["trl_plus"], rate["trl"])]
    diffs = [abs(a - b) for x, y in zip(runs["trl"], runs["trl_plus"]) for a, b in zip(x["losses"], y["losses"])]
    return {
        **{k: s[k] for k in ("batch_size", "max_length", "steps", "untimed", "repeats")},
        "tokens_per_step": runs["trl"][0]["tokens_per_step"],
        "trl_tokens_per_s": summary(rate["trl"], 1), "trl_plus_tokens_per_s": summary(rate["trl_plus"], 1),
        "ratio": summary(ratios)["median"], "ratio_iqr": summary(ratios)["iqr"], "ratios": [round(r, 4) for r in ratios],
        "trl_peak_gib": summary([r["peak_bytes"] / 2**30 for r in runs["trl"]]),
        "trl_plus_peak_gib": summary([r["peak_bytes"] / 2**30 for r in runs["trl_plus"]]),
        "max_loss_difference": max(diffs) if diffs else None,
    }


def part_ppo(model_dir: str, sizes: dict, device: str, workdir: Path) -> dict:
    s, words, rng = sizes["ppo"], pseudo_words(), random.Random(3)
    prompts = [{"prompt": words_text(rng, words, s["prompt_words"])} for _ in range(s["batch_size"] * s["steps"])]
    runs = alternate(lambda side: run_ppo(side, model_dir, prompts, s, device, workdir), ("rloo", "ppo"), s["repeats"])
    step = {side: [statistics.median(r["times"]) for r in rs] for side, rs in runs.items()}
    peak = {side: [r["peak_bytes"] for r in rs] for side, rs in runs.items()}
    step_ratios = [p / r for p, r in zip(step["ppo"], step["rloo"])]
    memory_ratios = [p / r for p, r in zip(peak["ppo"], peak["rloo"])]
    return {
        **{k: s[k] for k in ("batch_size", "completion_length", "steps", "untimed", "repeats")},
        "rloo_step_s": summary(step["rloo"]), "ppo_step_s": summary(step["ppo"]),
        "step_ratio": summary(step_ratios)["median"], "step_ratio_iqr": summary(step_ratios)["iqr"],
        "rloo_peak_gib": summary([b / 2**30 for b in peak["rloo"]]), "ppo_peak_gib": summary([b / 2**30 for b in peak["ppo"]]),
        "memory_ratio": summary(memory_ratios)["median"], "memory_ratio_iqr": summary(memory_ratios)["iqr"],
        "completion_length_seen": {side: [r["completion_length"] for r in rs] for side, rs in runs.items()},
    }


def part_quickstart(sizes: dict, device: str, workdir: Path) -> dict:
    from trl_plus.cli import main

    out = workdir / "quickstart"
    argv = ["quickstart", "--out", str(out), "--no-progress"] + [a for s in sizes["quickstart"] for a in ("--set", s)]
    reset_peak(device)
    started = time.perf_counter()
    code = main(argv)
    wall = time.perf_counter() - started
    report_file = out / "report" / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return {"exit_code": code, "wall_s": round(wall, 1), "peak_gib": round(peak_bytes(device) / 2**30, 3),
            "overrides": sizes["quickstart"], "verdict": report.get("verdict"),
            "stages_s": {row["stage"]: row["wall_time_s"] for row in report.get("costs", [])}}


ENGINE_STEPS = (8, 12)  # trained, then resumed to; tiny-ppo makes 4 optimizer steps per rollout batch


def launch_tiny_ppo(config: str, folder: Path, steps: int, first: bool) -> dict:
    """``trl-plus launch tiny-ppo`` on one process under ``config``; how it ended and what it left."""
    import subprocess

    cmd = [sys.executable, "-m", "trl_plus", "launch", "tiny-ppo", "--accelerate-config", config, "--num-processes", "1",
           "--output-dir", str(folder), "--overwrite" if first else "--resume",
           "--set", f"ppo.max_steps={steps}", "--set", "ppo.save_steps=4", "--set", "ppo.logging_steps=4"]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        code, tail = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-12:]
    except subprocess.TimeoutExpired:
        code, tail = "timed out after 300 s", []
    state = folder / "trainer_state.json"
    return {"exit_code": code, "wall_s": round(time.perf_counter() - started, 1),
            "global_step": json.loads(state.read_text())["global_step"] if state.exists() else None,
            "checkpoints": sorted(p.name for p in folder.glob("checkpoint-*")),
            "critic_saved": (folder / "critic").is_dir(), **({"tail": tail} if code != 0 else {})}


def part_engines(sizes: dict, device: str, workdir: Path) -> dict:
    import importlib.util

    out = {}
    for config in sizes["engines"]:
        if config.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
            out[config] = {"status": "skipped: deepspeed is not installed"}
            continue
        folder = workdir / f"engine-{config}"
        runs = [launch_tiny_ppo(config, folder, ENGINE_STEPS[0], first=True)]
        if runs[0]["exit_code"] == 0:
            runs.append(launch_tiny_ppo(config, folder, ENGINE_STEPS[1], first=False))
        ok = len(runs) == 2 and runs[1]["exit_code"] == 0 and runs[1]["global_step"] == ENGINE_STEPS[1]
        out[config] = {"status": "ok" if ok else "failed", "train": runs[0], "resume": runs[1] if len(runs) > 1 else None}
    return {"configs": out, "steps": list(ENGINE_STEPS)}


def environment(device: str) -> dict:
    import platform
    from importlib import metadata

    import torch

    names = ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "lm-eval", "trl-plus")
    info = {"python": platform.python_version(), "versions": {n: metadata.version(n) for n in names if _has(n)}}
    if device == "cuda":
        info.update(device=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    else:
        info.update(device=f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    return info


def _has(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", choices=("dpo", "ppo", "quickstart", "engines"))
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--sizes", required=True, help="the sizes, as JSON (gpu_sizes.sizes_for)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    opts = parser.parse_args(argv)
    import torch
    import transformers

    import datasets

    if opts.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to torch (torch.cuda.is_available() is False)")
    if opts.device == "cpu":
        torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    sizes, workdir = json.loads(opts.sizes), Path(opts.workdir)
    print(RESULT + json.dumps({"environment": environment(opts.device)}), flush=True)
    for name in opts.parts:  # a line per part as it ends: a later part's failure keeps the earlier figures
        started = time.perf_counter()
        if name in ("quickstart", "engines"):
            part = part_quickstart if name == "quickstart" else part_engines
            result = {name: part(sizes, opts.device, workdir)}
        else:
            result = {"model": build(workdir / "model", sizes["model"], opts.device)}
            part = part_dpo if name == "dpo" else part_ppo
            result[name] = part(str(workdir / "model"), sizes, opts.device, workdir)
        result[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
