"""The GPU check's sizes, goals and time estimates, per mode: read by ``gpu_check.py``
(which imports nothing heavy, so ``--dry-run`` runs anywhere) and passed to
``gpu_measure.py`` as JSON."""

from __future__ import annotations

import json

GOALS = {"dpo_tokens_per_s": (">=", 0.98), "ppo_step_time": ("<=", 1.3), "ppo_peak_memory": ("<=", 1.5)}

# The reduced quickstart of the test suite: every stage runs, on a few hundred rows.
_SMALL_QUICKSTART = [
    "stages.seeds=[0,1]", "stages.checkpoints=2", "stages.corpus.reviews=1200", "stages.corpus.prompts=160",
    "stages.corpus.eval_prompts=24", "stages.corpus.val_prompts=16", "stages.sft.model.hidden_size=32",
    "stages.sft.model.num_layers=1", "stages.pairs.max_new_tokens=12", "stages.reward.args.num_train_epochs=1",
    "stages.ppo.kl_coefs=[0.05]", "stages.ppo.args.max_steps=4", "stages.ppo.args.per_device_train_batch_size=8",
    "stages.ppo.args.max_completion_length=12", "stages.dpo.args.max_steps=4", "eval.generation.max_new_tokens=12",
    "eval.lm_eval.limit=8",
]

# Sizes per mode. "full" is the check (about 0.47B parameters); "quick" the same model with
# fewer steps and repeats and a quickstart of two seeds and one PPO setting; "tiny" the CPU
# smoke test of the code path. The check's tokenizer makes about two tokens of a generated
# word: DPO prompts of ~128 tokens and completions that fill max_length; PPO prompts of ~64.
SIZES = {
    "full": {
        "model": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "num_kv_heads": 16,
                  "intermediate_size": 4096, "vocab_size": 32000, "max_len": 2048},
        "dpo": {"batch_size": 8, "max_length": 512, "prompt_words": 64, "steps": 12, "untimed": 2, "repeats": 4},
        "ppo": {"batch_size": 16, "prompt_words": 32, "completion_length": 64, "steps": 5, "untimed": 1, "repeats": 4},
        "quickstart": [],
        "engines": ["fsdp", "deepspeed_zero2", "deepspeed_zero3"],
    },
    "quick": {
        "dpo": {"steps": 6, "untimed": 1, "repeats": 2},
        "ppo": {"completion_length": 32, "steps": 3, "untimed": 0, "repeats": 2},
        "quickstart": ["stages.seeds=[0,1]", "stages.ppo.kl_coefs=[0.05]"],
    },
    "tiny": {
        "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4, "intermediate_size": 128,
                  "vocab_size": 400, "max_len": 256},
        "dpo": {"batch_size": 4, "max_length": 64, "prompt_words": 8, "steps": 3, "untimed": 0, "repeats": 2},
        "ppo": {"batch_size": 4, "prompt_words": 6, "completion_length": 8, "steps": 3, "untimed": 0, "repeats": 2},
        "quickstart": _SMALL_QUICKSTART,
        "engines": ["cpu"],
    },
}


def sizes_for(mode: str, steps: int | None = None, repeats: int | None = None) -> dict:
    """The sizes of ``mode`` (quick: full's, reduced), with ``steps`` / ``repeats`` overriding both pairs."""
    full = json.loads(json.dumps(SIZES["full"]))
    sizes = full if mode == "full" else {**full, **{k: v for k, v in SIZES[mode].items() if k not in ("dpo", "ppo")}}
    for part in ("dpo", "ppo"):
        sizes[part] = {**full[part], **SIZES[mode].get(part, {})}
        sizes[part].update({k: v for k, v in (("steps", steps), ("repeats", repeats)) if v is not None})
        sizes[part]["untimed"] = min(sizes[part]["untimed"], max(sizes[part]["steps"] - 2, 0))
    return sizes


def parameter_count(m: dict) -> int:
    """A Llama's parameters from its sizes (untied embeddings, no biases)."""
    h, kv = m["hidden_size"], m["hidden_size"] // m["num_heads"] * m["num_kv_heads"]
    layer = 2 * h * h + 2 * h * kv + 3 * h * m["intermediate_size"] + 2 * h
    return m["num_layers"] * layer + 2 * m["vocab_size"] * h + h


def estimate_s(part: str, sizes: dict) -> float:
    """Seconds a part should take on one H100: a guess from the model's size and the
    per-token cost of transformers' generate, not a measurement."""
    if part == "dpo":
        s = sizes["dpo"]
        return 15 + 2 * s["repeats"] * (5 + 0.25 * s["steps"])
    if part == "ppo":
        s = sizes["ppo"]
        return 2 * s["repeats"] * (5 + s["steps"] * (0.02 * s["completion_length"] + 0.4))
    if part == "engines":
        return 50.0 * len(sizes["engines"])  # two launches each
    return 200.0 if not sizes["quickstart"] else 90.0
