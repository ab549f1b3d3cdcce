"""LoRA PPO learns ``tiny-ppo``: attention-only adapters reach at least 80% of full PPO's reward
gain within twice its steps, with a critic (value head and critic adapter on the shared base,
warmed up before the policy moves) whose explained variance is positive.

The runs start from the tiny model briefly fine-tuned on the recipe's own text
(:func:`pretrained_tiny`), not from ``tiny:causal-lm`` itself: a randomly initialised output
layer gives every token about the same logit whatever the hidden state (logit spread
~0.16), so an adapter below it cannot move the distribution. Maximising the expected
``char_share`` reward of the next token directly, by gradient, attention-only LoRA on
``tiny:causal-lm`` tops out at 0.068 (chance 0.053) while full fine-tuning reaches 1.0; after
the fine-tuning it reaches 0.32. LoRA adapts pretrained models; this is the smallest one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trl_plus.recipe import load_recipe

from test_ppo_trainer import one_torch_thread  # noqa: F401  (module-wide: the trainings run in module fixtures)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ATTENTION_LORA = ["peft.r=8", "peft.target_modules=[q_proj,k_proj,v_proj,o_proj]"]
FULL_STEPS = 48
WARMUP = 8
# Shared by both runs: 64 completions per minibatch, 128 per rollout (LoRA's few parameters learn
# from the rollouts' mean direction, which 32 samples do not pin down), no checkpoints.
COMMON = ["ppo.per_device_train_batch_size=64", "ppo.logging_steps=4", 'ppo.save_strategy="no"',
          "ppo.disable_tqdm=true", "ppo.report_to=none", "ppo.seed=0"]


def pretrained_tiny(folder: Path, steps: int = 150) -> Path:
    """``tiny:causal-lm`` fine-tuned for ``steps`` steps on ``tiny_prefs``' prompts and answers
    (about 4 s on one CPU thread), saved with its tokenizer into ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_plus.tiny import resolve

    source = resolve("tiny:causal-lm")
    tokenizer = AutoTokenizer.from_pretrained(source)
    rows = [json.loads(line) for line in (RECIPES / "data" / "tiny_prefs.jsonl").read_text().splitlines() if line]
    texts = [r["prompt"] + r[k] + tokenizer.eos_token for r in rows for k in ("chosen", "rejected")]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(source)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = tokenizer([texts[i] for i in torch.randint(0, len(texts), (32,)).tolist()], return_tensors="pt",
                          padding=True)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def pretrained_tiny_path(tmp_path_factory):
    return pretrained_tiny(tmp_path_factory.mktemp("pretrained-tiny"))


def train(out, overrides):
    from trl_plus.trainers import ppo

    return ppo.train_from_recipe(load_recipe("tiny-ppo", overrides=COMMON + overrides), str(out))


def rows(trainer, key):
    """The logged rows that hold ``key`` (rollout statistics), in order."""
    return [row for row in trainer.state.log_history if key in row and "train_runtime" not in row]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pretrained_tiny_path):
    model = [f"model.name_or_path={pretrained_tiny_path}"]
    # Full PPO at a full fine-tuning rate (the recipe's 1e-2 is for the random model; here it
    # overshoots to KL ~80 in one rollout); LoRA at ten times that, as LoRA is usually run.
    full = train(tmp_path_factory.mktemp("full"), model + [f"ppo.max_steps={FULL_STEPS}", "ppo.learning_rate=1.0e-3"])
    lora = train(tmp_path_factory.mktemp("lora"), model + ATTENTION_LORA + [
        f"ppo.max_steps={2 * FULL_STEPS}", "ppo.learning_rate=1.0e-2", f"ppo.critic_warmup_steps={WARMUP}"])
    return full, lora


def _smoothed(values, width=3):
    return [sum(values[i : i + width]) / width for i in range(len(values) - width + 1)]


def test_attention_lora_reaches_80_percent_of_full_ppo_gain_in_twice_the_steps(runs):
    full, lora = runs
    assert lora.args.critic_warmup_steps == WARMUP and lora.state.global_step == 2 * FULL_STEPS
    lora_rows = rows(lora, "reward")
    warm = [r for r in lora_rows if r["critic_warmup"] == 1.0]
    assert len(warm) == WARMUP // 4
    # The policy does not move during the warm-up: those rollouts are the initial policy's
    # (no KL to the reference), so their mean is the starting reward of both runs.
    assert all(abs(r["kl"]) < 1e-4 for r in warm), warm
    start = sum(r["reward"] for r in warm) / len(warm)
    full_rewards = [r["reward"] for r in rows(full, "reward")]
    full_gain = sum(full_rewards[-3:]) / 3 - start
    assert full_gain > 0.05, (start, full_rewards)  # the baseline learns
    lora_rewards = [r["reward"] for r in lora_rows if r["critic_warmup"] == 0.0]
    lora_gain = max(_smoothed(lora_rewards)) - start
    assert lora_gain >= 0.8 * full_gain, (start, full_rewards, lora_rewards)


def test_lora_critic_explained_variance_turns_positive(runs):
    _, lora = runs
    ev = [(r["critic_warmup"], r["value/explained_variance"]) for r in rows(lora, "value/explained_variance")]
    assert ev[0][1] == 0.0  # the first rollout: a zero value head, no better than a constant
    warmed = [v for flag, v in ev if flag == 1.0]
    assert warmed[-1] > 0, ev  # positive by the end of the warm-up, before the policy moves
    after = [v for flag, v in ev if flag == 0.0]
    assert sum(after) / len(after) > 0.2, ev
