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


def test_vision_language_processor_is_refused(tmp_path, tiny_model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor, LlavaProcessor

    from test_ppo_trainer import letter_share, prompts_dataset
    from trl_plus.errors import RecipeError

    processor = LlavaProcessor(image_processor=CLIPImageProcessor(), tokenizer=AutoTokenizer.from_pretrained(tiny_model_path))
    with pytest.raises(RecipeError, match="does not support vision-language models.*pixel_values.*RLOOTrainer"):
        trl_plus.PPOTrainer(
            AutoModelForCausalLM.from_pretrained(tiny_model_path),
            args=trl_plus.PPOConfig(output_dir=str(tmp_path), bf16=False, report_to="none"),
            train_dataset=prompts_dataset(8),
            processing_class=processor,
            rewards=[letter_share],
        )


def test_beta_zero_trains_without_a_reference(tmp_path, tiny_model_path):
    trainer = make_trainer(tmp_path, tiny_model_path, steps=2, beta=0.0)
    assert trainer.ref_model is None and trainer.kl_coef == 0.0
    trainer.train()
    assert all(math.isfinite(v) for v in logged(trainer, "loss/policy") + logged(trainer, "loss/value"))
    assert not logged(trainer, "kl")  # nothing to measure against, as in RLOO
    assert "kl" not in trainer._kl_stats and trainer._kl_stats["samples"] == 32


def test_kl_schedule_can_reach_zero_and_still_measures_kl(tmp_path, tiny_model_path):
    trainer = make_trainer(tmp_path, tiny_model_path, steps=4, logging_steps=1, kl={"name": "linear", "start": 0.1, "end": 0.0, "steps": 2})
    trainer.train()
    assert logged(trainer, "kl_coef")[-1] == 0.0
    assert len(logged(trainer, "kl")) == 4 and math.isfinite(logged(trainer, "kl")[-1])  # the reference stays


def test_kl_schedule_with_beta_zero_is_refused(tmp_path, tiny_model_path):
    from trl_plus.errors import RecipeError

    with pytest.raises(RecipeError, match="kl: a KL schedule needs the reference model, which beta 0 turns off"):
        make_trainer(tmp_path, tiny_model_path, steps=1, beta=0.0, kl={"name": "constant", "value": 0.1})


def test_moe_policy_logs_the_router_aux_loss(tmp_path, tiny_model_path):
    from transformers import OlmoeConfig

    config = OlmoeConfig(
        hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
        num_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.01,
    )
    path = save_tiny(tmp_path / "olmoe", tiny_model_path, config)
    trainer = make_trainer(tmp_path, path, steps=2)
    assert trainer.aux_loss_enabled
    trainer.train()
    aux = logged(trainer, "aux_loss")
    assert aux and all(math.isfinite(v) and v > 0 for v in aux)
    assert type(trainer.critic.backbone).__name__ == "OlmoeModel"  # no OLMoE classification class needed


@pytest.mark.parametrize("style", ["rewards", "reward_funcs"])
def test_per_function_reward_metrics_under_rloo_names(tmp_path, tiny_model_path, style):
    from test_ppo_trainer import letter_share

    trainer = make_trainer(tmp_path, tiny_model_path, steps=1, logging_steps=1, **{style: [letter_share]})
    trainer.train()
    row = trainer.state.log_history[0]
    assert row["rewards/letter_share/mean"] == pytest.approx(row["reward/letter_share"])
    assert math.isfinite(row["rewards/letter_share/std"]) and row["rewards/letter_share/std"] >= 0
    assert not any(key.startswith("rewards/reward/") for key in row)  # no stand-in function's entries
