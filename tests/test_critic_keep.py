"""A critic worth keeping: the critic warm-up holds the policy still, a value-only pre-training run
(``recipes/tiny-ppo-critic-pretrain.yaml``) saves a critic that ``critic_init: <folder>`` loads,
full or on a LoRA policy's shared base, and a run started from it has positive explained
variance at its first step, where a fresh critic has none."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from trl_plus.errors import RecipeError
from trl_plus.recipe import load_recipe

from test_ppo_lora_learns import ATTENTION_LORA, pretrained_tiny_path  # noqa: F401  (a session fixture)
from test_ppo_trainer import one_torch_thread  # noqa: F401  (module-wide: the trainings run in module fixtures)

QUIET = ["ppo.disable_tqdm=true", "ppo.report_to=none", 'ppo.save_strategy="no"']
PRETRAIN_STEPS = 24


def _train(name, out, overrides):
    from trl_plus.trainers import ppo

    return ppo.train_from_recipe(load_recipe(name, overrides=QUIET + overrides), str(out))


def _first_explained_variance(trainer) -> float:
    row = next(r for r in trainer.state.log_history if "value/explained_variance" in r)
    assert row["step"] == 1
    return row["value/explained_variance"]


# -- the warm-up -----------------------------------------------------------------------------------


def test_warmup_keeps_the_policy_still_under_weight_decay_and_trains_the_critic(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from trl_plus.tiny import resolve

    trainer = _train("tiny-ppo-critic-pretrain", tmp_path / "out", [
        "ppo.max_steps=4", "ppo.critic_warmup_steps=4", "ppo.weight_decay=0.1", "ppo.logging_steps=4"])
    initial = AutoModelForCausalLM.from_pretrained(resolve("tiny:causal-lm")).state_dict()
    policy = trainer.model.state_dict()
    assert all(torch.equal(policy[k], initial[k]) for k in initial)  # AdamW's decay did not move it either
    assert not any(p in trainer.optimizer.state for p in trainer.model.parameters())  # no Adam state
    critic = load_file(str(tmp_path / "out" / "critic" / "value_head.safetensors"))
    assert critic["weight"].abs().sum() > 0  # the critic learned
    assert [r["critic_warmup"] for r in trainer.state.log_history if "critic_warmup" in r] == [1.0]
    row = next(r for r in trainer.state.log_history if "loss/policy" in r)
    assert row["learning_rate"] > 0  # the schedule counts warm-up steps; only the step itself ran at 0


class _FakeTrainer:
    def __init__(self, processes: int, step: int):
        self.args = SimpleNamespace(vf_coef=0.5, critic_warmup_steps=2)
        self.model = SimpleNamespace(training=True)
        self.state = SimpleNamespace(global_step=step)
        self.accelerator = SimpleNamespace(num_processes=processes)
        self._metrics = {"train": {"critic_warmup": []}}


@pytest.mark.parametrize("processes", [1, 2])
def test_value_only_loss_keeps_policy_parameters_in_the_graph_under_ddp(processes):
    from trl_plus.trainers.ppo_warmup import combine_losses

    policy, critic = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    trainer = _FakeTrainer(processes, step=1)
    loss = combine_losses(trainer, (policy * 2).sum(), (critic**2).sum())
    loss.backward()
    assert torch.equal(critic.grad, torch.full((3,), 1.0))  # vf_coef x d(sum c^2)
    if processes > 1:  # DDP reduces a gradient for every parameter it wraps: zero, but there
        assert policy.grad is not None and not policy.grad.any()
    else:
        assert policy.grad is None
    after = _FakeTrainer(processes, step=2)
    assert combine_losses(after, torch.tensor(1.0), torch.tensor(2.0)).item() == 2.0  # pg + 0.5 x vf
    assert trainer._metrics["train"]["critic_warmup"] == [1.0] and after._metrics["train"]["critic_warmup"] == [0.0]


def test_warmup_step_moves_the_critic_alone_even_with_zero_policy_gradients_and_weight_decay():
    from trl_plus.trainers.ppo_warmup import CriticWarmup

    policy, critic = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW([{"params": policy.parameters(), "lr": 0.1, "weight_decay": 0.1},
                                   {"params": critic.parameters(), "lr": 0.2, "weight_decay": 0.1}])
    args = SimpleNamespace(critic_warmup_steps=1, critic_warmup_learning_rate=0.05, critic_learning_rate=None,
                           learning_rate=0.1)
    callback = CriticWarmup(SimpleNamespace(optimizer=optimizer, critic=critic))
    before = [p.detach().clone() for p in policy.parameters()]
    critic_before = critic.bias.item() * (1 - 0.05 * 0.1)  # after AdamW's decay at the warm-up rate
    for step in (0, 1):
        for p in policy.parameters():  # what DDP leaves after a value-only step: zeros, not None
            p.grad = torch.zeros_like(p)
        for p in critic.parameters():
            p.grad = torch.ones_like(p)
        state = SimpleNamespace(global_step=step)
        callback.on_pre_optimizer_step(args, state, None)
        lrs = [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        callback.on_optimizer_step(args, state, None)
        assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.2]  # put back for the scheduler
        if step == 0:
            assert lrs == [0.0, 0.05]
            assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
            assert all(p not in optimizer.state for p in policy.parameters())
            assert critic_before - critic.bias.item() == pytest.approx(0.05, rel=1e-3)  # Adam's first step: lr
        else:  # after the warm-up the policy steps (here: AdamW's decay alone moves it)
            assert lrs == [0.1, 0.2]
            assert not all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_warmup_settings_are_checked():
    from trl_plus import PPOConfig

    with pytest.raises(ValueError, match="vf_coef 0 turns off"):
        PPOConfig(output_dir="x", critic_warmup_steps=4, vf_coef=0.0, bf16=False)
    with pytest.raises(ValueError, match="critic_warmup_steps must be an integer >= 0"):
        PPOConfig(output_dir="x", critic_warmup_steps=-1, bf16=False)
    with pytest.raises(ValueError, match="critic_warmup_learning_rate must be > 0"):
        PPOConfig(output_dir="x", critic_warmup_learning_rate=0.0, bf16=False)


# -- keeping and reusing the critic ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained_critics(tmp_path_factory, pretrained_tiny_path):  # noqa: F811
    """Value-only pre-training with the shipped recipe on the fine-tuned tiny model: a full critic, and
    a critic on the LoRA policy's shared base."""
    model = [f"model.name_or_path={pretrained_tiny_path}", f"ppo.max_steps={PRETRAIN_STEPS}",
             f"ppo.critic_warmup_steps={PRETRAIN_STEPS}", "ppo.per_device_train_batch_size=64"]
    out = {}
    for layout, extra in (("full", []), ("lora", ATTENTION_LORA)):
        folder = tmp_path_factory.mktemp(f"pretrain-{layout}")
        _train("tiny-ppo-critic-pretrain", folder, model + extra)
        out[layout] = folder / "critic"
    return out


@pytest.mark.parametrize("layout", ["full", "lora"])
def test_warm_started_critic_explains_variance_at_step_one_a_fresh_one_does_not(
    layout, pretrained_critics, pretrained_tiny_path, tmp_path  # noqa: F811
):
    run = [f"model.name_or_path={pretrained_tiny_path}", "ppo.max_steps=1", "ppo.logging_steps=1",
           "ppo.per_device_train_batch_size=64"] + (ATTENTION_LORA if layout == "lora" else [])
    warm = _train("tiny-ppo", tmp_path / "warm", run + [f"ppo.critic_init={pretrained_critics[layout]}"])
    fresh = _train("tiny-ppo", tmp_path / "fresh", run)
    assert _first_explained_variance(fresh) <= 0  # a zero value head: no better than a constant
    assert _first_explained_variance(warm) > 0.1
    # the run saved the critic again, in the layout it was loaded in
    assert (tmp_path / "warm" / "critic" / "value_head.safetensors").is_file()
    assert ((tmp_path / "warm" / "critic" / "model.safetensors").is_file()) == (layout == "full")


def test_lora_critic_folder_holds_head_and_adapter_and_needs_a_lora_run(pretrained_critics, tmp_path):
    from trl_plus.trainers.ppo_critic import SavedSharedCritic, load_critic

    folder = pretrained_critics["lora"]
    info = json.loads((folder / "value_head.json").read_text())
    assert info["kind"] == "shared-base-value-head" and info["adapter"]["r"] == 8
    assert len(info["adapter"]["modules"]) == 8  # q, k, v, o projections of both layers
    assert (folder / "critic_adapter.safetensors").is_file() and not (folder / "model.safetensors").exists()
    assert isinstance(load_critic(str(folder)), SavedSharedCritic)
    with pytest.raises(RecipeError, match="needs a peft: section") as err:
        _train("tiny-ppo", tmp_path / "no-lora", ["ppo.max_steps=1", f"ppo.critic_init={folder}"])
    assert err.value.key == "ppo.critic_init"


def test_resume_refuses_a_critic_adapter_of_another_rank(pretrained_critics, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trl_plus.tiny import resolve
    from trl_plus.trainers.peft_support import SharedBaseCritic

    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve("tiny:causal-lm")),
                            LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with pytest.raises(RecipeError) as err:
        SharedBaseCritic(policy, adapter_r=4).load_saved(pretrained_critics["lora"])
    assert err.value.key == "ppo.critic_adapter_r"


# -- the critic adapter and gradient checkpointing -------------------------------------------------


def test_critic_adapter_gives_the_same_values_and_gradients_under_gradient_checkpointing():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trl_plus.tiny import resolve
    from trl_plus.trainers.peft_support import SharedBaseCritic

    torch.manual_seed(0)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve("tiny:causal-lm")),
                            LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    critic = SharedBaseCritic(policy, adapter_r=4)
    with torch.no_grad():
        for p in list(critic.adapter.lora_B.values()) + [critic.adapter.embedding_A, critic.score.weight]:
            p.normal_(0, 0.1)
    ids, mask = torch.randint(4, 300, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    policy.train()

    def values_and_grads():
        critic.zero_grad(set_to_none=True)
        values = critic(ids, mask)
        (values**2).sum().backward()
        return values.detach(), [p.grad.clone() for p in critic.parameters()]

    plain, plain_grads = values_and_grads()
    policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checked, checked_grads = values_and_grads()
    assert torch.allclose(plain, checked, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grads, checked_grads))
    assert all(g.abs().sum() > 0 for g in checked_grads)  # head, embedding code and every adapted layer
    assert all(p.grad is None for p in policy.parameters())  # nothing flows into the policy
    # outside the critic's pass its adapter is off: the policy and its reference are untouched
    fresh = AutoModelForCausalLM.from_pretrained(resolve("tiny:causal-lm")).eval()
    with torch.no_grad(), policy.disable_adapter():
        assert torch.allclose(policy.eval()(input_ids=ids).logits, fresh(input_ids=ids).logits, atol=1e-5)
