"""trl_plus.PPOTrainer on the tiny offline model: learning, KL control, rollout filters, errors, CLI."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

import trl_plus
from trl_plus.errors import RewardSourceError
from trl_plus.recipes.toy_rewards import char_share

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A tiny model is dominated by thread hand-off cost: one thread is ~10x faster on a busy CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def letter_share(prompts, completions, **columns):
    """The toy task: share of the completion's visible characters that are the letter 'e'."""
    return char_share(prompts, completions, chars="e")


def prompts_dataset(n: int = 64):
    from datasets import Dataset

    rows = [json.loads(line) for line in (RECIPES / "data" / "tiny_prefs.jsonl").read_text().splitlines() if line]
    return Dataset.from_list([{"prompt": r["prompt"]} for r in rows[:n]])


def make_trainer(tmp_path, tiny_model_path, *, steps=4, seed=0, lr=1e-2, plugin_manager=None, trainer_cls=None, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer_keys = ("rewards", "reward_funcs", "kl", "filters", "rollout_filters", "critic", "peft_config")
    config_keys = {k: kwargs.pop(k) for k in list(kwargs) if k not in trainer_keys}
    settings = dict(
        output_dir=str(tmp_path / f"run-{seed}"),
        learning_rate=lr,
        per_device_train_batch_size=16,
        num_generations=2,
        max_completion_length=8,
        max_steps=steps,
        logging_steps=2,
        save_strategy="no",
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        seed=seed,
    )
    args = trl_plus.PPOConfig(**{**settings, **config_keys})
    if "reward_funcs" not in kwargs:
        kwargs.setdefault("rewards", [letter_share])
    cls = trainer_cls or trl_plus.PPOTrainer
    return cls(
        AutoModelForCausalLM.from_pretrained(tiny_model_path),
        args=args,
        train_dataset=prompts_dataset(),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path),
        plugin_manager=plugin_manager,
        **kwargs,
    )


def logged(trainer, key):
    return [row[key] for row in trainer.state.log_history if key in row and "train_runtime" not in row]


# ---------------------------------------------------------------------------------------
# learning and KL control (the runs are shared between tests: CPU time is scarce)
# ---------------------------------------------------------------------------------------

LEARN_STEPS = 40


@pytest.fixture(scope="module")
def learning_runs(tmp_path_factory, tiny_model_path):
    runs = {}
    for seed in (0, 1):
        trainer = make_trainer(tmp_path_factory.mktemp("learn"), tiny_model_path, steps=LEARN_STEPS, seed=seed)
        trainer.train()
        runs[seed] = trainer
    return runs


def test_reward_goes_up_on_the_toy_task(learning_runs):
    for seed, trainer in learning_runs.items():
        rewards = logged(trainer, "reward")
        assert len(rewards) == LEARN_STEPS // 2
        early, late = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
        # Chance level is ~0.04 with a batch std of ~0.08 over 32 samples per rollout: a gain
        # of 0.03 in a 3-log mean is far beyond sampling noise.
        assert late > early + 0.03, (seed, rewards)
        kls = logged(trainer, "kl")
        assert all(math.isfinite(k) for k in kls), kls
        assert all(math.isfinite(e) for e in logged(trainer, "entropy"))


def test_adaptive_controller_steers_kl_toward_target(tmp_path, tiny_model_path, learning_runs):
    # horizon 16 samples = one 16-sample rollout: a fast controller, so the effect shows in 40 rollouts.
    target = 0.1
    trainer = make_trainer(
        tmp_path, tiny_model_path, steps=LEARN_STEPS, seed=0, kl={"name": "adaptive", "init": 0.05, "target": target, "horizon": 16}
    )
    trainer.train()
    coefs = logged(trainer, "kl_coef")
    kls = logged(trainer, "kl")
    free = logged(learning_runs[0], "kl")  # same seed, constant kl_coef 0.05
    # Above target, the controller raises kl_coef ...
    assert coefs[-1] > 5 * coefs[0], coefs
    # ... which pulls the measured KL back toward the target, below the uncontrolled run's.
    late, late_free = sum(kls[-4:]) / 4, sum(free[-4:]) / 4
    assert abs(late - target) < abs(late_free - target), (kls, free)
    assert late < 0.7 * late_free, (kls, free)


def test_logged_keys_and_kl_coef_in_every_row(learning_runs):
    history = learning_runs[0].state.log_history
    assert all("kl_coef" in row for row in history)
    row = history[0]
    for key in (
        "reward", "reward/letter_share", "kl", "kl_coef", "entropy", "loss/value", "loss/policy",
        "value/explained_variance", "clip_ratio/policy", "clip_ratio/value", "approx_kl", "completions/mean_length",
    ):
        assert key in row, key


def test_each_ppo_epoch_draws_new_minibatches(tmp_path, tiny_model_path):
    seen = []

    class Spy(trl_plus.PPOTrainer):
        def _compute_loss(self, model, inputs):
            seen.append(sorted(map(tuple, inputs["completion_ids"].tolist())))
            return super()._compute_loss(model, inputs)

    trainer = make_trainer(tmp_path, tiny_model_path, steps=4, trainer_cls=Spy, num_ppo_epochs=2, num_mini_batches=2)
    assert trainer.args.num_iterations == 2 and trainer.args.steps_per_generation == 2
    trainer.train()
    assert len(seen) == 4  # one rollout: 2 epochs x 2 minibatches
    epoch1, epoch2 = seen[0] + seen[1], seen[2] + seen[3]
    assert sorted(epoch1) == sorted(epoch2)  # the same rollout ...
    assert seen[0] != seen[2] and seen[0] != seen[3]  # ... split differently


def test_trl_style_reward_funcs_work_without_reward_sources(tmp_path, tiny_model_path, tiny_reward_model_path):
    from transformers import AutoModelForSequenceClassification

    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_path, num_labels=1)
    trainer = make_trainer(
        tmp_path, tiny_model_path, steps=2, rewards=None, reward_funcs=[letter_share, reward_model], reward_weights=[1.0, 0.1]
    )
    trainer.train()
    row = trainer.state.log_history[0]
    assert math.isfinite(row["reward/letter_share"]) and math.isfinite(row["reward"])
    assert any(key.startswith("reward/") and key != "reward/letter_share" for key in row)


# ---------------------------------------------------------------------------------------
# rollout filters
# ---------------------------------------------------------------------------------------


class _Recorder:
    def __init__(self):
        self.rewards = []

    @trl_plus.hookimpl
    def trl_plus_rollout_scored(self, trainer, step, prompts, completions, rewards):
        self.rewards.append(list(rewards["reward"]))


def test_rollout_filter_drops_what_it_says_and_counts_it(tmp_path, tiny_model_path, plugin_manager, register_plugin):
    recorder = _Recorder()
    register_plugin(recorder)
    masks = []

    class Spy(trl_plus.PPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            masks.append((out["loss_mask"].sum(1) > 0).tolist())
            advantages = out["advantages"] * (out["loss_mask"] == 0)
            assert advantages.abs().max().item() == 0.0  # dropped samples and padding: zero advantage
            return out

    threshold = 0.05
    trainer = make_trainer(
        tmp_path,
        tiny_model_path,
        steps=4,
        plugin_manager=plugin_manager,
        trainer_cls=Spy,
        rollout_filters=[{"name": "reward_range", "min": threshold}],
    )
    trainer.train()
    assert len(recorder.rewards) == len(masks) == 4
    expected_drops = 0
    for rewards, kept in zip(recorder.rewards, masks):
        assert kept == [r is not None and r >= threshold for r in rewards]
        expected_drops += sum(not k for k in kept)
    assert expected_drops > 0
    assert logged(trainer, "rollouts/dropped_total")[-1] == expected_drops
    report = json.loads((Path(trainer.args.output_dir) / "filter_report.json").read_text())
    rollouts = report["rollouts"]
    assert rollouts["filters"][0]["name"] == "reward_range"
    assert rollouts["filters"][0]["dropped"] == expected_drops
    assert rollouts["rows_in"] - rollouts["rows_out"] == expected_drops


def test_reward_variance_filter_skips_flat_batches(tmp_path, tiny_model_path):
    def flat(prompts, completions, **columns):
        return [0.5] * len(completions)

    trainer = make_trainer(
        tmp_path, tiny_model_path, steps=2, rewards=[flat], rollout_filters=[{"name": "reward_variance"}]
    )
    trainer.train()
    assert logged(trainer, "rollouts/dropped_total")[-1] == 2 * 16  # two rollouts of 8 prompts x 2 completions
    assert logged(trainer, "loss/policy")[-1] == 0.0


def test_prompt_filters_run_before_training(tmp_path, tiny_model_path):
    trainer = make_trainer(tmp_path, tiny_model_path, steps=1, filters=[{"name": "regex", "pattern": "movie", "column": "prompt"}])
    report = json.loads((Path(trainer.args.output_dir) / "filter_report.json").read_text())
    assert report["train"]["rows_in"] == 64
    assert 0 < report["train"]["rows_out"] == len(trainer.train_dataset) <= 64


# ---------------------------------------------------------------------------------------
# reward sources that fail
# ---------------------------------------------------------------------------------------


def _assert_no_model_written(output_dir: Path):
    assert not list(output_dir.glob("checkpoint-*"))
    assert not (output_dir / "model.safetensors").exists()
    assert not (output_dir / "critic").exists()


def test_reward_source_raising_names_the_source(tmp_path, tiny_model_path):
    def broken(prompts, completions, **columns):
        raise ValueError("scorer crashed")

    trainer = make_trainer(tmp_path, tiny_model_path, steps=2, rewards=[broken])
    with pytest.raises(RewardSourceError, match="'broken'.*scorer crashed"):
        trainer.train()
    _assert_no_model_written(Path(trainer.args.output_dir))


def test_reward_source_nan_names_the_source(tmp_path, tiny_model_path):
    def nan_scores(prompts, completions, **columns):
        return [float("nan")] * len(completions)

    trainer = make_trainer(tmp_path, tiny_model_path, steps=2, rewards=[nan_scores])
    with pytest.raises(RewardSourceError, match="'nan_scores'.*nan"):
        trainer.train()
    _assert_no_model_written(Path(trainer.args.output_dir))


RESPONSES = {
    "slow": lambda body: (time.sleep(1.0), (200, {"scores": []}))[1],
    "500": lambda body: (500, b"boom"),
}


@pytest.mark.parametrize("behaviour, message", [("slow", "timed out after 0.3 s"), ("500", "answered 500")])
def test_http_reward_source_failure_is_retried_then_named(tmp_path, tiny_model_path, json_endpoint, behaviour, message):
    server = json_endpoint(RESPONSES[behaviour])
    spec = {"name": "http", "url": server.url, "timeout": 0.3, "retries": 1, "backoff": 0.0, "alias": "judge_api"}
    trainer = make_trainer(tmp_path, tiny_model_path, steps=2, rewards=[spec])
    with pytest.raises(RewardSourceError, match=message) as info:
        trainer.train()
    assert server.url in str(info.value)
    assert len(server.requests) == 2  # the first try and one retry
    _assert_no_model_written(Path(trainer.args.output_dir))


# ---------------------------------------------------------------------------------------
# PEFT, checkpoints, the recipe through the CLI
# ---------------------------------------------------------------------------------------


def test_peft_uses_adapter_disabled_reference(tmp_path, tiny_model_path):
    from peft import LoraConfig

    trainer = make_trainer(
        tmp_path, tiny_model_path, steps=2, peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    assert trainer.ref_model is None  # no second copy of the policy
    trainer.train()
    assert all(math.isfinite(k) for k in logged(trainer, "kl"))
    trainer.save_model()
    out = Path(trainer.args.output_dir)
    assert (out / "adapter_config.json").exists() and (out / "critic" / "value_head.safetensors").exists()


def test_checkpoint_saves_and_restores_the_critic(tmp_path, tiny_model_path):
    import torch

    trainer = make_trainer(tmp_path, tiny_model_path, steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    checkpoint = Path(trainer.args.output_dir) / "checkpoint-2"
    assert (checkpoint / "critic" / "model.safetensors").exists()
    trained = {k: v.clone() for k, v in trainer.critic.state_dict().items()}

    resumed = make_trainer(tmp_path, tiny_model_path, steps=2, save_strategy="no")
    fresh = resumed.critic.state_dict()
    assert any(not torch.equal(fresh[k], trained[k]) for k in trained)
    resumed._load_from_checkpoint(str(checkpoint))
    assert all(torch.equal(resumed.critic.state_dict()[k], trained[k]) for k in trained)


def test_resume_continues_the_adaptive_controller(tmp_path, tiny_model_path):
    kl = {"name": "adaptive", "init": 0.05, "target": 0.01, "horizon": 16}
    first = make_trainer(tmp_path, tiny_model_path, steps=6, kl=kl, save_strategy="steps", save_steps=6)
    first.train()
    coef = first.kl_coef
    assert coef > 0.06  # KL above target: the controller has moved
    checkpoint = Path(first.args.output_dir) / "checkpoint-6"
    assert json.loads((checkpoint / "ppo_state.json").read_text())["kl_coef"] == pytest.approx(coef)

    resumed = make_trainer(tmp_path, tiny_model_path, steps=8, kl=kl)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    after = [row["kl_coef"] for row in resumed.state.log_history if row.get("step", 0) > 6 and "loss" in row]
    assert after and after[0] > 0.9 * coef  # continued, not restarted from init (0.05)


def test_tiny_ppo_recipe_through_the_cli(tmp_path):
    from transformers import AutoModelForCausalLM

    from trl_plus.cli import main
    from trl_plus.trainers.ppo_critic import load_critic

    out = tmp_path / "tiny-ppo"
    code = main(["train", "tiny-ppo", "--output-dir", str(out), "--set", "ppo.max_steps=4", "--set", "ppo.logging_steps=2"])
    assert code == 0
    AutoModelForCausalLM.from_pretrained(out)
    critic = load_critic(str(out / "critic"))  # the saved backbone and its trained value head
    assert critic.head.weight.abs().sum() > 0  # trained away from its zero start
    state = json.loads((out / "trainer_state.json").read_text())
    history = state["log_history"]
    assert history and all("kl_coef" in row for row in history)
    first = history[0]
    for key in (
        "reward", "reward/letter_e", "kl", "kl_coef", "entropy", "loss/value", "value/explained_variance",
        "clip_ratio/policy", "clip_ratio/value", "approx_kl", "completions/mean_length", "rollouts/dropped_total",
    ):
        assert key in first, key
    assert json.loads((out / "filter_report.json").read_text())["rollouts"]["filters"][0]["name"] == "reward_range"


def test_resume_continues_reward_normalisation_and_rollout_filter_counts(tmp_path, tiny_model_path):
    rewards = [{"name": "python", "function": f"{Path(__file__)}:letter_share", "normalize": True}]
    filters = [{"name": "reward_range", "min": 0.0}]
    first = make_trainer(tmp_path, tiny_model_path, steps=4, rewards=rewards, rollout_filters=filters,
                         save_strategy="steps", save_steps=4)
    first.train()
    norm = first.reward_mix.sources[0].norm
    count = first._rollout_chain.counts[0]
    assert norm.n == 4 * 16 and 0 < count.dropped < count.rows_in and first._rollout_dropped == count.dropped
    saved = json.loads((Path(first.args.output_dir) / "checkpoint-4" / "ppo_state.json").read_text())
    assert saved["reward_norms"]["python"]["n"] == norm.n and saved["rollouts"]["dropped"] == count.dropped
    assert saved["rollouts"]["unscored"] == first._rollout_unscored

    resumed = make_trainer(tmp_path, tiny_model_path, steps=6, rewards=rewards, rollout_filters=filters)
    resumed.train(resume_from_checkpoint=str(Path(first.args.output_dir) / "checkpoint-4"))
    after = resumed.reward_mix.sources[0].norm
    assert after.n == norm.n + 2 * 16  # continued from the checkpoint's statistics, not from zero
    again = resumed._rollout_chain.counts[0]
    assert again.rows_in == count.rows_in + 2 * 16 and again.dropped >= count.dropped
    totals = [row["rollouts/dropped_total"] for row in resumed.state.log_history
              if "rollouts/dropped_total" in row and row["step"] > 4]
    assert totals and min(totals) >= count.dropped
    first._rollout_unscored = 5  # as if 5 samples had gone unscored before the checkpoint
    first.save_model(str(tmp_path / "with-unscored"))
    again_resumed = make_trainer(tmp_path, tiny_model_path, steps=4, rewards=rewards, rollout_filters=filters)
    again_resumed._restore_ppo_state(tmp_path / "with-unscored")  # reads its ppo_state.json
    assert again_resumed._rollout_unscored == 5


def test_on_policy_update_reuses_the_rollout_critic_forward_bit_for_bit(tmp_path, tiny_model_path, monkeypatch):
    """One minibatch and one epoch per rollout: the rollout's critic forward (with gradients) is the
    loss's, so the critic runs once a step, and training ends on exactly the weights of a run that
    runs it twice."""
    import torch

    from trl_plus.trainers.ppo_critic import PPOCriticMixin, ValueModel

    calls = []
    forward = ValueModel.forward

    def counted(self, *args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(ValueModel, "forward", counted)
    settings = dict(steps=3, num_mini_batches=1, num_ppo_epochs=1, seed=1)
    reused = make_trainer(tmp_path / "reused", tiny_model_path, **settings)
    reused.train()
    assert calls == [True] * 3  # one forward a step, with gradients, used by the rollout and the loss
    calls.clear()
    monkeypatch.setattr(PPOCriticMixin, "_reuses_rollout_values", lambda self, mode: False)
    twice = make_trainer(tmp_path / "twice", tiny_model_path, **settings)
    twice.train()
    assert calls == [False, True] * 3  # the rollout's (no gradients), then the loss's
    for model in ("model", "critic"):
        a, b = getattr(reused, model).state_dict(), getattr(twice, model).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), model
    assert reused.state.log_history[-2]["loss/value"] == twice.state.log_history[-2]["loss/value"]
