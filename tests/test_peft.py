"""LoRA (the recipe's ``peft:`` section) in both trainers: one copy of the base weights for
policy, reference and (PPO) critic; the saved checkpoint is the adapter; evaluation and the
comparison pipeline load it on its base."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from trl_plus.cli import main
from trl_plus.errors import RecipeError
from trl_plus.recipe import load_recipe, validate_dict
from trl_plus.trainers.peft_support import SharedBaseCritic, held_parameters

from test_ppo_trainer import one_torch_thread  # noqa: F401  (module-wide: the trainings run in module fixtures)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
LORA = ["peft.r=8", "peft.target_modules=[q_proj,v_proj]"]
FULL_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _base_parameters() -> tuple[int, int]:
    """Parameters of the tiny base model, and its hidden size."""
    from transformers import AutoModelForCausalLM

    from trl_plus.tiny import resolve

    base = AutoModelForCausalLM.from_pretrained(resolve("tiny:causal-lm"))
    return sum(p.numel() for p in base.parameters()), base.config.hidden_size


def _adapter_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def _losses(trainer, key="loss"):
    return [row[key] for row in trainer.state.log_history if key in row and "train_runtime" not in row]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    from trl_plus.trainers import dpo

    out = tmp_path_factory.mktemp("dpo-lora")
    recipe = load_recipe("tiny-dpo", overrides=LORA + [
        "dpo.max_steps=10", "dpo.logging_steps=1", "dpo.learning_rate=1.0e-2", "dpo.disable_tqdm=true"])
    return dpo.train_from_recipe(recipe, str(out)), out


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    from trl_plus.trainers import ppo

    out = tmp_path_factory.mktemp("ppo-lora")
    recipe = load_recipe("tiny-ppo", overrides=LORA + [
        "ppo.max_steps=4", "ppo.logging_steps=1", "ppo.save_strategy=steps", "ppo.save_steps=2",
        "ppo.disable_tqdm=true"])
    return ppo.train_from_recipe(recipe, str(out)), out, recipe


# -- the recipe section ------------------------------------------------------------------------


def _dpo_raw(**extra) -> dict:
    return {"trainer": "dpo", "model": {"name_or_path": "tiny:causal-lm"},
            "data": {"train": {"path": str(RECIPES / "data" / "tiny_prefs.jsonl")}}, **extra}


@pytest.mark.parametrize(
    "peft, key, message",
    [
        ({"rr": 4}, "peft.rr", "Did you mean: r?"),
        ({"r": 0}, "peft.r", "greater than 0"),
        ({"lora_dropout": 1.5}, "peft.lora_dropout", "less than 1"),
        ({"target_modules": []}, "peft.target_modules", "non-empty list"),
        ({"task_type": "SEQ_CLS"}, "peft.task_type", "CAUSAL_LM"),
        ({"bias": "some"}, "peft.bias", "'none'"),
    ],
)
def test_peft_section_errors_name_the_key(peft, key, message):
    with pytest.raises(RecipeError) as err:
        validate_dict(_dpo_raw(peft=peft))
    assert err.value.key == key and message in str(err.value)


def test_peft_under_model_points_to_the_section(capsys):
    with pytest.raises(RecipeError, match="top-level peft section") as err:
        validate_dict({**_dpo_raw(), "model": {"name_or_path": "tiny:causal-lm", "peft": {"r": 4}}})
    assert err.value.key == "model.peft"
    assert main(["validate", "tiny-dpo", "--set", "peft.rr=4"]) == 2
    assert "peft.rr" in capsys.readouterr().err


def test_peft_section_defaults_to_a_causal_lm_lora_config():
    from trl_plus.loading import peft_config

    config = peft_config(validate_dict(_dpo_raw(peft={"r": 4, "target_modules": ["q_proj"]})).peft)
    assert (config.r, config.lora_alpha, config.lora_dropout, config.task_type) == (4, 16, 0.0, "CAUSAL_LM")
    assert config.target_modules == {"q_proj"}
    assert peft_config(validate_dict(_dpo_raw()).peft) is None


def test_unknown_target_module_is_named_before_training(tmp_path):
    from trl_plus.trainers import dpo

    recipe = validate_dict(_dpo_raw(peft={"target_modules": ["q_proj", "qq_proj"]}))
    with pytest.raises(RecipeError) as err:
        dpo.train_from_recipe(recipe, str(tmp_path / "out"))
    assert err.value.key == "peft.target_modules"
    assert "'qq_proj'" in str(err.value) and "v_proj" in str(err.value)  # names the model's linear layers
    assert not (tmp_path / "out").exists()
    recipe = validate_dict(_dpo_raw(peft={"target_modules": ["q_proj", "lm_head"]}))
    with pytest.raises(RecipeError, match="output layer 'lm_head'") as err:
        dpo.train_from_recipe(recipe, str(tmp_path / "out"))
    assert err.value.key == "peft.target_modules"


# -- DPO -----------------------------------------------------------------------------------------


def test_dpo_lora_trains_with_one_copy_of_the_base(dpo_run):
    from accelerate.utils import is_peft_model

    trainer, _ = dpo_run
    assert is_peft_model(trainer.model) and trainer.ref_model is None
    base, _ = _base_parameters()
    adapter = _adapter_parameters(trainer.model)
    assert adapter > 0 and held_parameters(trainer) == base + adapter
    losses = _losses(trainer)
    assert len(losses) == 10 and losses[-1] < losses[0] - 0.01


def test_dpo_lora_saves_the_adapter_not_the_weights(dpo_run):
    _, out = dpo_run
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not any((out / name).exists() for name in FULL_WEIGHTS)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8


def test_eval_loads_the_adapter_on_its_base(dpo_run, tmp_path):
    from trl_plus.eval import GenerationSettings, generate
    from trl_plus.eval.checkpoints import _base_and_adapter

    _, out = dpo_run
    prompts = [json.loads(line)["prompt"] for line in (RECIPES / "data" / "tiny_prefs.jsonl").read_text().splitlines()]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts[:4]))
    code = main(["eval", str(out), "--prompts", str(tmp_path / "p.jsonl"), "--gold", "python:function="
                 f"{RECIPES / 'toy_rewards.py'}:char_share", "--max-new-tokens", "4", "--out", str(tmp_path / "eval"),
                 "--quiet"])
    assert code == 0
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["gold_reward"]["mean"] is not None
    # the adapter is applied: greedy completions of the adapter differ from its base's
    greedy = GenerationSettings(max_new_tokens=6, temperature=0)
    base, adapter = _base_and_adapter(str(out), None)
    assert adapter == str(out)
    tuned = generate(str(out), prompts[:8], greedy, progress=False, derive_seed=False)
    plain = generate(base, prompts[:8], greedy, progress=False, derive_seed=False)
    assert tuned != plain


# -- PPO -----------------------------------------------------------------------------------------


def test_ppo_lora_reference_is_the_adapter_disabled_policy(ppo_run):
    import torch
    from transformers import AutoModelForCausalLM

    from trl_plus.tiny import resolve

    trainer, _, _ = ppo_run
    assert trainer.ref_model is None
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    fresh = AutoModelForCausalLM.from_pretrained(resolve("tiny:causal-lm")).eval()
    model = trainer.model.eval()
    with torch.no_grad(), model.disable_adapter():
        disabled = model(input_ids=ids).logits
    with torch.no_grad():
        enabled = model(input_ids=ids).logits
        expected = fresh(input_ids=ids).logits
    assert torch.allclose(disabled, expected, atol=1e-5)
    assert not torch.allclose(enabled, expected, atol=1e-5)  # the adapter trained
    kls = _losses(trainer, "kl")
    assert kls and all(math.isfinite(k) for k in kls)


def test_ppo_lora_critic_adds_a_value_head_and_a_small_adapter(ppo_run):
    trainer, _, _ = ppo_run
    base, hidden = _base_parameters()
    critic = trainer.critic
    assert isinstance(critic, SharedBaseCritic)
    r, vocab = trainer.args.critic_adapter_r, trainer.model.get_input_embeddings().weight.size(0)
    adapted = 4  # q_proj and v_proj of the two layers, as the policy's LoRA
    expected = hidden + r * (vocab + hidden) + adapted * r * (hidden + hidden)
    assert r == 8 and sum(p.numel() for p in critic.parameters()) == expected
    assert held_parameters(trainer) == base + _adapter_parameters(trainer.model) + expected
    # head and adapter are in the optimizer and learned; the values are finite
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in critic.parameters())
    assert critic.score.weight.abs().sum() > 0 and all(b.abs().sum() > 0 for b in critic.adapter.lora_B.values())
    assert all(math.isfinite(v) for v in _losses(trainer, "loss/value"))


def test_ppo_lora_critic_reads_the_base_and_trains_alone(ppo_run):
    import torch
    from transformers import AutoModelForCausalLM

    from trl_plus.tiny import resolve

    trainer, _, _ = ppo_run
    ids, mask = torch.tensor([[1, 5, 9, 12, 7]]), torch.ones(1, 5, dtype=torch.long)
    trainer.model.zero_grad(set_to_none=True)
    trainer.critic.zero_grad(set_to_none=True)
    values = trainer.critic(ids, mask)
    values.sum().backward()
    assert all(p.grad is not None for p in trainer.critic.parameters())  # head and adapter
    assert all(p.grad is None for p in trainer.model.parameters())  # no gradient into base or policy adapters
    trainer.critic.zero_grad(set_to_none=True)
    fresh = AutoModelForCausalLM.from_pretrained(resolve("tiny:causal-lm")).eval()
    model = trainer.model.eval()
    with torch.no_grad():
        expected = fresh.model(input_ids=ids, attention_mask=mask).last_hidden_state
        with model.disable_adapter():  # outside the critic's pass its adapter is off: the plain base
            base = model.get_base_model().model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(base, expected, atol=1e-5)
    # the critic reads that base through its own adapter, which trained
    assert not torch.allclose(values.detach(), trainer.critic.score(base).squeeze(-1), atol=1e-5)


def test_ppo_lora_checkpoint_is_the_adapter_and_the_value_head(ppo_run):
    _, out, _ = ppo_run
    for folder in (out, out / "checkpoint-2"):
        assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
        assert (folder / "critic" / "value_head.safetensors").exists()
        assert not any((folder / name).exists() for name in FULL_WEIGHTS)
        assert not (folder / "critic" / "model.safetensors").exists()


def test_ppo_lora_resumes_from_a_checkpoint(ppo_run, tmp_path):
    import torch
    from safetensors.torch import load_file

    from trl_plus.trainers import ppo

    _, out, recipe = ppo_run
    checkpoint = out / "checkpoint-2"
    resumed = ppo.train_from_recipe(recipe, str(tmp_path / "resumed"), resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    # the first two steps' logs are the checkpoint's (timings included), not a re-run
    before = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    assert [row["step"] for row in before] == [1, 2]
    assert resumed.state.log_history[:2] == before
    assert [row["step"] for row in resumed.state.log_history if "loss" in row] == [1, 2, 3, 4]
    # restoring puts back the checkpoint's value head and adapter
    resumed._load_from_checkpoint(str(checkpoint))
    head = load_file(str(checkpoint / "critic" / "value_head.safetensors"))["score.weight"]
    assert torch.equal(resumed.critic.score.weight.detach(), head)
    saved = load_file(str(checkpoint / "adapter_model.safetensors"))
    lora = {n: p for n, p in resumed.model.named_parameters() if "lora_" in n}
    assert saved and all(any(torch.equal(p.detach(), w) for p in lora.values()) for w in saved.values())


def test_ppo_lora_resume_needs_a_value_head_checkpoint(ppo_run, tmp_path):
    trainer, _, _ = ppo_run
    (tmp_path / "critic").mkdir()
    with pytest.raises(RecipeError, match="no value_head.safetensors"):
        trainer.critic.load_saved(tmp_path / "critic")


# -- the comparison pipeline ---------------------------------------------------------------------


def test_pipeline_stage_peft_is_validated_and_passed_to_each_run(tmp_path):
    from trl_plus.pipeline.config import parse
    from trl_plus.pipeline.policy import PolicyRun, _dpo_recipe, _ppo_recipe

    with pytest.raises(RecipeError) as err:
        load_recipe("quickstart", overrides=["stages.dpo.peft.r=0"])
    assert err.value.key == "stages.dpo.peft.r"
    with pytest.raises(RecipeError) as err:
        load_recipe("quickstart", overrides=["peft.r=4"])
    assert err.value.key == "peft" and "stages.dpo.peft" in str(err.value)

    recipe = load_recipe("quickstart", overrides=["stages.dpo.peft.r=4"])
    ctx = SimpleNamespace(config=parse(recipe), run=SimpleNamespace(path=lambda *parts: tmp_path.joinpath(*parts)))
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "preferences.jsonl").write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}))
    (tmp_path / "reward").mkdir()
    (tmp_path / "sft").mkdir()
    dpo_raw = _dpo_recipe(ctx, PolicyRun("dpo", 0.1, 0, "beta"))
    assert dpo_raw["peft"] == {"r": 4}
    assert "peft" not in _ppo_recipe(ctx, PolicyRun("ppo", 0.05, 0, "kl_coef"))  # only the stage that asked
    assert validate_dict(dpo_raw).peft.r == 4


def test_pipeline_finds_adapter_checkpoints(ppo_run):
    from trl_plus.pipeline.plan import checkpoints_of

    _, out, _ = ppo_run
    (out / "done.json").write_text(json.dumps({"global_step": 4}))
    try:
        assert checkpoints_of(out) == [(2, out / "checkpoint-2"), (4, out / "checkpoint-4")]
    finally:
        (out / "done.json").unlink()


@pytest.mark.slow
def test_reduced_pipeline_trains_and_evaluates_adapters(tmp_path, tiny_model_path, tiny_reward_model_path, monkeypatch):
    from test_pipeline_user import SMALL_ARGS, _user_recipe

    lora = {"r": 8, "target_modules": ["q_proj", "v_proj"]}
    recipe = _user_recipe(tmp_path, str(tiny_model_path), str(tiny_reward_model_path), seeds=[0],
                          ppo_gt={"kl_coefs": [0.05], "peft": lora, "args": SMALL_ARGS},
                          dpo={"betas": [0.1], "peft": lora, "args": {"max_steps": 4, "per_device_train_batch_size": 8}})
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(recipe), "--out", "run", "--no-progress"]) == 0
    out = tmp_path / "run"
    for run in ("dpo/beta0.1-seed0", "ppo_gt/kl_coef0.05-seed0"):
        for folder in (out / run, out / run / "checkpoint-2"):
            assert (folder / "adapter_config.json").exists() and not (folder / "model.safetensors").exists()
        assert json.loads((out / run / "adapter_config.json").read_text())["base_model_name_or_path"] == str(out / "sft")
    points = {p["id"]: p for p in json.loads((out / "eval" / "summary" / "points.json").read_text())}
    for run in ("dpo/beta0.1-seed0", "ppo_gt/kl_coef0.05-seed0"):
        for step in (2, 4):
            assert points[f"{run}/step-{step}"]["gold"] is not None and points[f"{run}/step-{step}"]["kl"] is not None
    assert (out / "report" / "report.md").exists()
