"""The pipeline's stages load their models as the trainers do: through ``trl_plus.loading``
and the ``trl_plus_load_model`` hook, so a model-loading plugin changes every stage (the
SFT base, the SFT model the pairs stage samples from, the reward model's start), each
asked for under its role."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

import trl_plus
from trl_plus.manager import Hooks
from trl_plus.pipeline import run_pipeline
from trl_plus.recipe import load_recipe

PROMPTS = [f"review : the {w} {v}" for w in ("plot", "cast", "music") for v in ("was", "felt")]
HELD = [f"review : the {w} {v}" for w in ("sets", "finale") for v in ("was", "seemed")]
MARK = "trl_plus_test_loaded_as"  # set on every model the plugin loads, saved with its config


class RecordingLoader:
    """A model-loading plugin: loads every model itself, records (name, role) and marks
    the model's config with the role it was loaded for."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    @trl_plus.hookimpl
    def trl_plus_load_model(self, name_or_path, role, init_kwargs):
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        self.calls.append((str(name_or_path), role))
        if role == "reward":
            model = AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=1, **init_kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, **init_kwargs)
        setattr(model.config, MARK, role)
        return model


def _recipe(folder: Path, model: Path) -> Path:
    """SFT from a base model (no training), pairs sampled from the SFT model, a reward
    model trained on them: every stage before the policies that loads a model."""
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    (folder / "held.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in HELD))
    recipe = {
        "rewards": [{"name": "python", "function": "trl_plus.recipes.toy_rewards:char_share", "alias": "gold"}],
        "stages": {"seeds": [0], "checkpoints": 1, "sft": {"base": str(model), "train": False},
                   "pairs": {"prompts": "prompts.jsonl", "samples_per_prompt": 3, "max_new_tokens": 6,
                             "batch_size": 8},
                   "reward": {"eval_fraction": 0.0, "args": {"num_train_epochs": 1, "per_device_train_batch_size": 8}},
                   "dpo": {"betas": [0.1], "args": {"max_steps": 1}}},
        "eval": {"prompts": "held.jsonl", "generation": {"max_new_tokens": 4}, "kl": {"num_samples": 1}},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_sft_pairs_and_reward_stages_load_through_the_model_hook(tmp_path, tiny_model_path, one_thread):
    loader = RecordingLoader()
    hooks = Hooks()
    hooks.pm.register(loader, name="recording-loader")
    recipe = load_recipe(str(_recipe(tmp_path, tiny_model_path)), hooks=hooks)
    out = tmp_path / "run"
    run_pipeline(recipe, out, hooks=hooks, progress=False, log=lambda *a: None, stop_after="reward")

    sft = str(out / "sft")
    assert loader.calls == [(str(tiny_model_path), "policy"),  # sft: the base model
                            (sft, "policy"),  # pairs: the SFT model samples the completions
                            (sft, "reward"),  # reward: the SFT model with a one-label score head
                            (str(out / "reward"), "reward")]  # reward: the trained model scores held-out pairs
    # what the plugin loaded is what each stage went on with, and saved
    assert json.loads((out / "sft" / "config.json").read_text())[MARK] == "policy"
    reward_config = json.loads((out / "reward" / "config.json").read_text())
    assert reward_config[MARK] == "reward" and len(reward_config["id2label"]) == 1
    assert (out / "pairs" / "pairs.jsonl").read_text().strip()

