"""PPO's rollout on the tiny model: what the KL schedule is fed, the reward path, the captured log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from test_ppo_trainer import logged, make_trainer  # the tiny PPO setup every trainer test uses

from trl_plus.plugins.kl.adaptive import AdaptiveKLController


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


class RecordingController(AdaptiveKLController):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def __call__(self, step, stats):
        before = self.value
        after = super().__call__(step, stats)
        self.calls.append((step, dict(stats), before, after))
        return after


def test_adaptive_controller_counts_rollout_samples(tmp_path, tiny_model_path):
    """4 optimizer steps per 64-sample rollout, horizon 10000: each rollout moves kl_coef by
    error * 64 / 10000 (counting optimizer steps would give error * 4 / 10000)."""
    controller = RecordingController(init=0.05, target=1e-4, horizon=10000)
    trainer = make_trainer(tmp_path, tiny_model_path, steps=12, num_mini_batches=4, kl=controller)
    trainer.train()
    measured = [c for c in controller.calls if "kl" in c[1]]
    assert len(measured) == 2  # before rollouts 2 and 3
    for i, (step, stats, before, after) in enumerate(measured, start=1):
        assert stats["samples"] == 64 * i and step == 4 * i
        error = min(max(stats["kl"] / 1e-4 - 1, -0.2), 0.2)
        assert after / before - 1 == pytest.approx(error * 64 / 10000, rel=1e-9)
    # The first rollout's KL is ~0 (the policy is the reference): error -0.2, -0.128% per rollout.
    assert measured[0][3] / measured[0][2] == pytest.approx(1 - 0.2 * 64 / 10000)
    assert trainer._kl_stats["samples"] == 3 * 64


def save_tiny(folder, tiny_model_path, config):
    """A tiny causal LM of ``config``'s architecture with the tiny tokenizer, saved in ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(config, key, getattr(tokenizer, key))
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_gpt2(tmp_path, tiny_model_path, dropout=0.0):
    from transformers import GPT2Config

    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return save_tiny(tmp_path / "gpt2", tiny_model_path, config)


def test_dropout_is_off_by_default_so_the_first_ratio_is_one(tmp_path, tiny_model_path):
    import trl

    import trl_plus

    assert trl_plus.PPOConfig(output_dir=str(tmp_path), bf16=False).disable_dropout is True
    assert trl.RLOOConfig(output_dir=str(tmp_path), bf16=False).disable_dropout is False  # RLOO's default
    path = tiny_gpt2(tmp_path, tiny_model_path, dropout=0.5)
    drifts = {}
    for disable in (True, False):
        trainer = make_trainer(tmp_path, path, steps=1, logging_steps=1, disable_dropout=disable)
        trainer.train()
        drifts[disable] = logged(trainer, "approx_kl")[0]  # old -> new policy drift before any update
    assert drifts[True] < 1e-10 < 1e-3 < drifts[False], drifts
    # An RLOOConfig (dropout on by default) given to PPOTrainer is converted with dropout off.
    from trl_plus.trainers.ppo_setup import _as_ppo_config

    assert _as_ppo_config(trl.RLOOConfig(output_dir=str(tmp_path), bf16=False), None).disable_dropout is True


def test_critic_runs_in_policy_sized_chunks_with_gradient_checkpointing(tmp_path, tiny_model_path):
    rows = []
    trainer = make_trainer(tmp_path, tiny_model_path, steps=2, num_mini_batches=2, per_device_train_batch_size=8, gradient_checkpointing=True)
    assert trainer.critic.backbone.is_gradient_checkpointing
    forward = trainer.critic_module.forward

    def spy(input_ids, attention_mask):
        rows.append((input_ids.size(0), torch.is_grad_enabled(), trainer.critic.backbone.is_gradient_checkpointing))
        return forward(input_ids, attention_mask)

    trainer.critic_module.forward = spy
    trainer.train()
    # One 16-sample rollout, valued in chunks of per_device_train_batch_size (8) without gradients and with
    # checkpointing off; then the two 8-sample minibatches with gradients and checkpointing on.
    assert rows == [(8, False, False), (8, False, False), (8, True, True), (8, True, True)]
    assert all(math.isfinite(v) for v in logged(trainer, "loss/value"))


def test_reward_clip_range_bounds_the_score_trained_on(tmp_path, tiny_model_path, monkeypatch):
    from trl_plus.trainers import ppo_math

    scores = []
    per_token_rewards = ppo_math.per_token_rewards

    def spy(score, kl, mask, kl_coef):
        scores.append(score.clone())
        return per_token_rewards(score, kl, mask, kl_coef)

    monkeypatch.setattr(ppo_math, "per_token_rewards", spy)

    def big(prompts, completions, **columns):
        return [5.0 if i % 2 else -3.0 for i in range(len(completions))]

    trainer = make_trainer(tmp_path, tiny_model_path, steps=1, logging_steps=1, rewards=[big], reward_clip_range=(-1.0, 0.5))
    trainer.train()
    assert scores and set(scores[0].tolist()) == {-1.0, 0.5}  # clipped before the KL penalty
    assert logged(trainer, "reward")[0] == pytest.approx(1.0)  # the logged reward is the sources' own (5 and -3)


def test_completions_table_shows_ppo_advantages(tmp_path, tiny_model_path):
    import trl_plus
    from trl_plus.trainers import ppo_math

    outs = []

    class Spy(trl_plus.PPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            outs.append(out)
            return out

    trainer = make_trainer(tmp_path, tiny_model_path, steps=1, trainer_cls=Spy)
    trainer.train()
    expected = ppo_math.masked_mean(outs[0]["advantages"], outs[0]["loss_mask"], dim=1).tolist()
    assert list(trainer._logs["advantages"]) == pytest.approx(expected)
    assert len(trainer._logs["advantages"]) == len(trainer._logs["prompt"]) == 16


def test_a_reference_that_is_not_the_initial_policy_is_an_error(tmp_path, tiny_model_path):
    import trl_plus
    from trl_plus.errors import TrlPlusError

    class Edited(trl_plus.PPOTrainer):
        """The policy changed in memory after loading: RLOO's reference (from its folder) is not it."""

        def __init__(self, model, **kwargs):
            with torch.no_grad():
                model.lm_head.weight.mul_(3.0)
            super().__init__(model, **kwargs)

    trainer = make_trainer(tmp_path, tiny_model_path, steps=1, trainer_cls=Edited)
    with pytest.raises(TrlPlusError, match="reference model is not the initial policy.*_name_or_path"):
        trainer.train()


@pytest.mark.parametrize("fault, message", [("extra pass", "expected 2 log-prob passes.*saw 4"), ("shifted", "do not sum to RLOO's old_logps")])
def test_captured_log_probs_are_cross_checked(tmp_path, tiny_model_path, fault, message):
    import trl_plus
    from trl_plus.errors import TrlPlusError

    class Faulty(trl_plus.PPOTrainer):
        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            if self._capture is not None and not torch.is_grad_enabled():
                if fault == "extra pass":
                    self._capture.append(out[0])
                elif len(self._capture) == 1:
                    self._capture[0] = self._capture[0] + 0.5
            return out

    trainer = make_trainer(tmp_path, tiny_model_path, steps=1, trainer_cls=Faulty)
    with pytest.raises(TrlPlusError, match=message):
        trainer.train()
