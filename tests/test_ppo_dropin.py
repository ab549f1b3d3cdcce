"""PPOTrainer as a drop-in for trl.RLOOTrainer: where RLOO trains, PPO trains or refuses with a reason."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from test_ppo_rollout import save_tiny  # a tiny model of any architecture with the tiny tokenizer
from test_ppo_trainer import logged, make_trainer  # the tiny PPO setup every trainer test uses

import trl_plus


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def tiny_granite(tmp_path, tiny_model_path):
    from transformers import GraniteConfig

    config = GraniteConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    return save_tiny(tmp_path / "granite", tiny_model_path, config)


def test_critic_for_a_causal_lm_without_a_classification_class(tmp_path, tiny_model_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = tiny_granite(tmp_path, tiny_model_path)
    with pytest.raises(ValueError):  # transformers has no Granite sequence-classification model
        AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path))
    trainer = make_trainer(tmp_path, path, steps=2, save_strategy="steps", save_steps=2)
    assert type(trainer.critic.backbone).__name__ == "GraniteModel"  # the policy's backbone, no LM head
    trainer.train()
    assert all(math.isfinite(v) for v in logged(trainer, "loss/value"))
    assert trainer.critic.head.weight.abs().sum() > 0  # the value head trained
    trained = {k: v.clone() for k, v in trainer.critic.state_dict().items()}
    resumed = make_trainer(tmp_path, path, steps=2)
    resumed._load_from_checkpoint(str(Path(trainer.args.output_dir) / "checkpoint-2"))
    assert all(torch.equal(resumed.critic.state_dict()[k], v) for k, v in trained.items())


def test_critic_path_gets_trust_remote_code_and_model_init_kwargs(tmp_path, tiny_model_path, tiny_reward_model_path, plugin_manager, register_plugin):
    seen = []

    class Loader:
        @trl_plus.hookimpl(tryfirst=True)
        def trl_plus_load_model(self, name_or_path, role, init_kwargs):
            if role == "critic":
                seen.append(dict(init_kwargs))
                from transformers import AutoModelForSequenceClassification

                return AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=1)
            return None

    register_plugin(Loader())
    make_trainer(
        tmp_path, tiny_model_path, steps=1, plugin_manager=plugin_manager, critic_init=str(tiny_reward_model_path),
        trust_remote_code=True,
    )
    assert seen and seen[0]["trust_remote_code"] is True
