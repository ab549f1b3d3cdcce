"""Which engines PPO starts under, and the critic's engine configuration.

DeepSpeed does not run on these CPUs (and is not installed): what is tested here is what
``accelerate launch`` hands a PPO run under the shipped DeepSpeed configs (the environment
accelerate's launcher builds, the ``DeepSpeedPlugin`` accelerate builds from it) and the
configuration the critic's own DeepSpeed engine is given. The FSDP2 run itself is in
``test_ppo_sharded.py``; the DeepSpeed run is the GPU check's (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import trl_plus
from trl_plus.cli import main
from trl_plus.errors import RecipeError
from trl_plus.launching import shipped_accelerate_configs
from trl_plus.trainers.ppo_engine import DEEPSPEED, FSDP2, PLAIN, check_engine_env, critic_deepspeed_config, engine_of

SHIPPED = Path(__file__).parent.parent / "recipes" / "accelerate"


def _launch_env(config: Path) -> dict[str, str]:
    """The environment ``accelerate launch --config_file CONFIG`` gives a DeepSpeed run's processes,
    built by accelerate's own launcher code (as ``accelerate launch`` does before it starts them)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    return {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}


@pytest.fixture
def ppo_args(tmp_path):
    return trl_plus.PPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2,
                              max_grad_norm=0.5, bf16=True, use_cpu=True, report_to=[])


@pytest.mark.parametrize("name, stage", [("deepspeed_zero2", 2), ("deepspeed_zero3", 3)])
def test_critic_engine_config_from_the_shipped_deepspeed_configs(name, stage, ppo_args, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    env = _launch_env(SHIPPED / f"{name}.yaml")
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(stage)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    check_engine_env()  # accepted at start-up
    plugin = DeepSpeedPlugin()  # what the Accelerator builds from that environment
    plugin.set_mixed_precision("bf16")
    policy = plugin.deepspeed_config
    before = repr(policy)
    hidden = 48
    config = critic_deepspeed_config(policy, ppo_args, hidden_size=hidden, world_size=8)
    assert repr(policy) == before  # the policy's config is not touched
    assert config["zero_optimization"]["stage"] == stage
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 2
    assert config["train_batch_size"] == 4 * 2 * 8
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"]["enabled"] is True
    assert "optimizer" not in config and "scheduler" not in config  # the critic's own are passed in
    assert not any(v == "auto" for v in _leaves(config)), config  # DeepSpeed would refuse an unfilled value
    zero = config["zero_optimization"]
    if stage == 3:
        assert zero["reduce_bucket_size"] == hidden * hidden
        assert zero["stage3_prefetch_bucket_size"] == int(0.9 * hidden * hidden)
        assert zero["stage3_param_persistence_threshold"] == 10 * hidden
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # critic/ gets real weights
    else:
        assert not {"reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"} & set(zero)


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


def test_critic_engine_config_keeps_explicit_values_and_drops_the_optimizer(ppo_args):
    config = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
        "scheduler": {"type": "WarmupLR"},
        "zero_optimization": {"stage": 3, "reduce_bucket_size": 1000, "offload_param": {"device": "cpu"}},
        "fp16": {"enabled": "auto"},
    }
    out = critic_deepspeed_config(config, ppo_args, hidden_size=10, world_size=1)
    assert out["zero_optimization"]["reduce_bucket_size"] == 1000  # a value the user wrote stays
    assert out["zero_optimization"]["offload_param"] == {"device": "cpu"}
    assert out["zero_optimization"]["stage3_prefetch_bucket_size"] == 90
    assert out["fp16"]["enabled"] is False and "optimizer" not in out and "scheduler" not in out


def test_start_up_refuses_fsdp1_and_accepts_fsdp2_and_deepspeed(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(RecipeError, match="FSDP version 2 only.*fsdp_version: 2.*version 1"):
        check_engine_env()
    monkeypatch.setenv("FSDP_VERSION", "2")
    check_engine_env()
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    check_engine_env()


def test_engine_of_reads_the_accelerator():
    from types import SimpleNamespace as NS

    plain = NS(is_deepspeed_enabled=False, is_fsdp_enabled=False)
    fsdp2 = NS(is_deepspeed_enabled=False, is_fsdp_enabled=True, accelerator=NS(state=NS(fsdp_plugin=NS(fsdp_version=2))))
    fsdp1 = NS(is_deepspeed_enabled=False, is_fsdp_enabled=True, accelerator=NS(state=NS(fsdp_plugin=NS(fsdp_version=1))))
    assert engine_of(plain) == PLAIN and engine_of(fsdp2) == FSDP2
    assert engine_of(NS(is_deepspeed_enabled=True)) == DEEPSPEED
    with pytest.raises(RecipeError, match="version 2 only"):
        engine_of(fsdp1)


@pytest.mark.parametrize("config", ["deepspeed_zero2", "deepspeed_zero3", "fsdp"])
def test_validate_and_launch_accept_ppo_under_sharded_engines(config, capsys):
    assert main(["validate", "tiny-ppo", "--accelerate-config", config]) == 0
    assert f"under {config}.yaml" in capsys.readouterr().out
    assert main(["launch", "tiny-ppo", "--accelerate-config", config, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"--config_file {shipped_accelerate_configs()[config]}" in printed
    assert "-m trl_plus train tiny-ppo" in printed


def test_fsdp1_config_is_refused_by_validate_and_launch_naming_the_setting(tmp_path, capsys):
    text = (SHIPPED / "fsdp.yaml").read_text().replace("fsdp_version: 2", "fsdp_version: 1")
    config = tmp_path / "fsdp1.yaml"
    config.write_text(text)
    for command in (["validate", "tiny-ppo"], ["launch", "tiny-ppo", "--dry-run"]):
        assert main(command + ["--accelerate-config", str(config)]) == 2
        err = capsys.readouterr().err
        assert "--accelerate-config" in err and "fsdp_version: 2" in err and "fsdp1.yaml" in err
        assert "Traceback" not in err
    assert main(["validate", "tiny-dpo", "--accelerate-config", str(config)]) == 0  # DPO runs under FSDP 1
    assert "FSDP_VERSION" not in os.environ  # the check's environment is not left behind


class _FakeDeepSpeedEngine(torch.nn.Module):
    """What PPO's critic engine calls on a DeepSpeed engine, on CPU: forward, ``backward`` (the
    loss scaled by the accumulation steps), ``step`` (applied at the end of an accumulation),
    ``get_global_grad_norm``, ``save_checkpoint`` and ``load_checkpoint``."""

    def __init__(self, model, optimizer, scheduler, config):
        super().__init__()
        self.module, self.optimizer, self.scheduler, self.config = model, optimizer, scheduler, config
        self.calls: list[tuple] = []
        self.micro_steps = 0

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def backward(self, loss):
        self.calls.append(("backward", float(loss.detach())))
        (loss / self.config["gradient_accumulation_steps"]).backward()
        self.micro_steps += 1

    def step(self):
        self.calls.append(("step",))
        if self.micro_steps % self.config["gradient_accumulation_steps"] == 0:
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()

    def get_global_grad_norm(self):
        return 0.25

    def save_checkpoint(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), Path(folder) / "engine.pt")
        self.calls.append(("save", str(folder)))

    def load_checkpoint(self, folder, load_module_strict=True):
        self.module.load_state_dict(torch.load(Path(folder) / "engine.pt"))
        self.calls.append(("load", str(folder)))


def _as_deepspeed(trainer, monkeypatch, made: list) -> None:
    """Switch a one-process trainer's critic to the DeepSpeed engine path, with a stand-in engine."""
    from accelerate.utils import DeepSpeedPlugin

    from trl_plus.trainers.ppo_engine import CriticEngine

    def initialize(model, optimizer, lr_scheduler, config):
        made.append(_FakeDeepSpeedEngine(model, optimizer, lr_scheduler, config))
        return made[-1], optimizer, None, lr_scheduler

    monkeypatch.setattr(CriticEngine, "_deepspeed_initialize", staticmethod(initialize))
    monkeypatch.setattr(CriticEngine, "_deepspeed_base", lambda self: DeepSpeedPlugin(zero_stage=2).deepspeed_config)
    engine = trainer.critic_engine
    engine.kind, engine.module = DEEPSPEED, engine.critic


def test_deepspeed_critic_engine_takes_the_value_loss_and_its_checkpoint(tmp_path, tiny_model_path, monkeypatch):
    from test_ppo_trainer import logged, make_trainer

    made: list = []
    trainer = make_trainer(tmp_path, tiny_model_path, steps=4, logging_steps=1, save_strategy="steps", save_steps=2)
    _as_deepspeed(trainer, monkeypatch, made)
    critic_before = {k: v.clone() for k, v in trainer.critic.state_dict().items()}
    trainer.train()
    (engine,) = made
    assert engine.config["train_micro_batch_size_per_gpu"] == 16 and "optimizer" not in engine.config
    critic_ids = {id(p) for p in trainer.critic.parameters()}
    assert not any(id(p) in critic_ids for g in trainer.optimizer.param_groups for p in g["params"])
    backward = [c[1] for c in engine.calls if c[0] == "backward"]
    assert [c[0] for c in engine.calls if c[0] != "save"] == ["backward", "step"] * 4  # one micro-step each
    value = [trainer.args.vf_coef * v for v in logged(trainer, "loss/value")]
    assert backward == pytest.approx(value, rel=1e-5)  # the value loss, and only it, went through the critic's engine
    assert any(not torch.equal(critic_before[k], v) for k, v in trainer.critic.state_dict().items())
    assert logged(trainer, "value/grad_norm") == [0.25] * 4  # the engine's norm (it clips inside its step)
    checkpoint = Path(trainer.args.output_dir) / "checkpoint-2"
    assert ("save", str(checkpoint / "critic_engine")) in engine.calls
    assert (checkpoint / "critic" / "value_head.safetensors").exists()

    resumed = make_trainer(tmp_path, tiny_model_path, steps=4, logging_steps=1)
    _as_deepspeed(resumed, monkeypatch, made)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert ("load", str(checkpoint / "critic_engine")) in made[-1].calls
    assert resumed.state.global_step == 4
