"""PPO's critic under the run's distributed engine: one process, DDP, FSDP2 or DeepSpeed.

PPO trains two models, the policy and the critic; the Trainer and accelerate know one,
``self.model``. :class:`CriticEngine` gives the critic the engine the policy has:

- **One process and DDP.** The critic is prepared (DDP-wrapped) and trains as a second
  parameter group of the policy's optimizer. Its weights are saved in ``critic/``, its
  optimizer state in the checkpoint's ``optimizer.pt``.
- **FSDP2** (``fsdp_version: 2``). The critic is sharded by accelerate's own FSDP2
  preparation (``accelerator.prepare(critic, optimizer)``: the run's auto-wrap policy,
  mixed precision, resharding and CPU-efficient loading). Its gradients are
  reduce-scattered in the same backward pass as the policy's, from the one loss. It has
  its own optimizer and learning-rate schedule, built as the policy's are (optimizer
  class and arguments, ``critic_learning_rate``, scheduler type and warm-up), and steps
  when the policy steps. It cannot be a group of the policy's optimizer: FSDP2 swaps a
  prepared model's parameters for sharded ones, and an FSDP optimizer checkpoint names
  every parameter through the policy's modules.
- **DeepSpeed ZeRO-1/2/3.** The critic is its own DeepSpeed engine
  (``deepspeed.initialize`` with the run's DeepSpeed config, its ``auto`` values filled
  for the critic by :func:`critic_deepspeed_config`). DeepSpeed scales, reduces and steps
  inside ``engine.backward`` and ``engine.step``, and two engines cannot share one
  backward, so the value loss goes through the critic's engine (``backward``, then
  ``step``, which applies at the end of each gradient accumulation) and the policy loss
  through the policy's (the Trainer's).

Why not one module holding both models: the policy must stay a plain causal LM, the one
RLOO generates with, vLLM syncs and ``from_pretrained`` loads.

Checkpoints under FSDP2 and DeepSpeed hold ``critic_engine/``, the critic and its
optimizer in the engine's own format (accelerate's ``save_fsdp_model`` and
``save_fsdp_optimizer`` in the run's state-dict type; DeepSpeed's ``save_checkpoint``),
which ``--resume`` restores; ``critic/`` always holds the gathered full weights, which
``critic_init: PATH`` loads.
"""

from __future__ import annotations

import copy
import math
import os
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import RecipeError

PLAIN, FSDP2, DEEPSPEED = "plain", "fsdp2", "deepspeed"
ENGINE_DIR = "critic_engine"  # in a checkpoint: the critic and its optimizer in the engine's format
SCHEDULER = "scheduler.pt"


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def check_engine_env(where: str = "accelerate config") -> None:
    """Before any model loads: refuse what PPO cannot run under, from what ``accelerate launch``
    exported (FSDP version 1: its wrapped modules hide the critic's parameters from the
    policy's optimizer checkpoint, and FSDP2 is what accelerate recommends)."""
    if _env_on("ACCELERATE_USE_FSDP") and os.environ.get("FSDP_VERSION", "1").strip() != "2":
        raise RecipeError(
            "PPOTrainer runs under FSDP version 2 only (fsdp_version: 2, as the shipped fsdp config has); this "
            f"config selects FSDP version {os.environ.get('FSDP_VERSION', '1')}. DPO, RLOO and GRPO run under either",
            where,
        )


def sharded_env() -> bool:
    """Whether ``accelerate launch`` started this process under FSDP or DeepSpeed."""
    return _env_on("ACCELERATE_USE_FSDP") or _env_on("ACCELERATE_USE_DEEPSPEED")


def check_critic_adapter(args, lora: bool) -> None:
    """The LoRA critic's own adapter (``critic_adapter_r`` > 0) hooks into the sharded policy's
    modules, which is not supported under FSDP or DeepSpeed: the head-only critic is."""
    if lora and sharded_env() and getattr(args, "critic_adapter_r", 0) and args.critic_init == "policy":
        raise RecipeError(
            "under FSDP or DeepSpeed, LoRA PPO's critic on the shared base runs without its own adapter: set "
            "ppo.critic_adapter_r: 0 (a value head on the base), or give ppo.critic_init a model path (a separate critic)",
            "ppo.critic_adapter_r",
        )


def engine_of(trainer) -> str:
    """The engine the trainer's accelerator runs: ``plain`` (one process or DDP), ``fsdp2`` or ``deepspeed``."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        return DEEPSPEED
    if getattr(trainer, "is_fsdp_enabled", False):
        version = getattr(trainer.accelerator.state.fsdp_plugin, "fsdp_version", 1)
        if version != 2:
            raise RecipeError(
                f"PPOTrainer runs under FSDP version 2 only (fsdp_version: 2); this run uses version {version}",
                "accelerate config",
            )
        return FSDP2
    return PLAIN


def critic_deepspeed_config(base: dict, args, hidden_size: int, world_size: int) -> dict:
    """The critic engine's DeepSpeed config: the run's (``base``, the policy's plugin config),
    with the critic's own optimizer and schedule (given to ``deepspeed.initialize``, so no
    ``optimizer``/``scheduler`` section) and every ``auto`` value filled from ``args`` (a
    ``PPOConfig``) and the critic's hidden size, as the Trainer fills the policy's."""
    config = copy.deepcopy(base)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    micro, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps

    def fill(section: dict, key: str, value) -> None:
        if section.get(key, "auto") == "auto":
            section[key] = value

    fill(config, "train_micro_batch_size_per_gpu", micro)
    fill(config, "gradient_accumulation_steps", accumulation)
    fill(config, "train_batch_size", micro * accumulation * world_size)
    fill(config, "gradient_clipping", args.max_grad_norm)
    for name, wanted in (("bf16", bool(args.bf16)), ("fp16", bool(args.fp16))):
        if name in config:
            fill(config[name], "enabled", wanted)
    zero = config.setdefault("zero_optimization", {})
    fill(zero, "stage", 0)
    if zero["stage"] == 3:
        fill(zero, "reduce_bucket_size", hidden_size * hidden_size)
        fill(zero, "stage3_prefetch_bucket_size", int(0.9 * hidden_size * hidden_size))
        fill(zero, "stage3_param_persistence_threshold", 10 * hidden_size)
        # critic/ must hold real weights: gather the 16-bit weights on save
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return config


class CriticEngine:
    """The critic as the run's engine trains it (see the module's docstring).

    :param trainer: the ``PPOTrainer`` (its accelerator, args and Trainer methods).
    :param critic: the value model (``ValueModel`` or the LoRA layout's value head).
    """

    def __init__(self, trainer, critic):
        self.trainer, self.critic = trainer, critic
        self.kind = engine_of(trainer)
        self.optimizer = self.scheduler = None
        self.module = critic  # what every critic forward goes through
        if self.kind == PLAIN:
            self.module = trainer.accelerator.prepare_model(critic)

    @property
    def own_optimizer(self) -> bool:
        """False: the critic is a parameter group of the policy's optimizer (one process, DDP)."""
        return self.kind != PLAIN

    # -- building -----------------------------------------------------------------------------
    def param_groups(self, skip: set[int] = frozenset()) -> list[dict]:
        """The critic's optimizer groups, as the Trainer groups the policy's: weight decay on what
        the Trainer decays, none on the rest, at ``critic_learning_rate`` (default: ``learning_rate``);
        parameters whose ``id`` is in ``skip`` (already in an optimizer) left out, empty groups dropped."""
        trainer, args = self.trainer, self.trainer.args
        decay = set(trainer.get_decay_parameter_names(self.critic))
        lr = args.critic_learning_rate or args.learning_rate
        params = [(n, p) for n, p in self.critic.named_parameters() if p.requires_grad and id(p) not in skip]
        groups = [
            {"params": [p for n, p in params if n in decay], "weight_decay": args.weight_decay, "lr": lr},
            {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0, "lr": lr},
        ]
        return [g for g in groups if g["params"]]

    def _new_optimizer(self):
        trainer, args = self.trainer, self.trainer.args
        optimizer_cls, kwargs = trainer.get_optimizer_cls_and_kwargs(args, self.critic)
        return optimizer_cls(self.param_groups(), **dict(kwargs, lr=args.critic_learning_rate or args.learning_rate))

    def _new_scheduler(self, optimizer, num_training_steps: int):
        from transformers.optimization import get_scheduler

        args = self.trainer.args
        return get_scheduler(
            args.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=args.get_warmup_steps(num_training_steps),
            num_training_steps=num_training_steps,
            scheduler_specific_kwargs=args.lr_scheduler_kwargs,
        )

    def build(self, num_training_steps: int) -> None:
        """Shard the critic and build its optimizer and schedule (FSDP2, DeepSpeed); once, when the
        Trainer builds its scheduler (the policy is prepared by then)."""
        if not self.own_optimizer or self.optimizer is not None:
            return
        accelerator = self.trainer.accelerator
        optimizer = self._new_optimizer()
        if self.kind == FSDP2:
            with _wrap_names_for(self.critic, accelerator.state.fsdp_plugin):
                self.module, self.optimizer = accelerator.prepare(self.critic, optimizer)
            self.critic = self.module  # fully_shard shards in place: the same module, now sharded
            self.scheduler = self._new_scheduler(self.optimizer, num_training_steps)
            return
        scheduler = self._new_scheduler(optimizer, num_training_steps)
        config = critic_deepspeed_config(
            self._deepspeed_base(),
            self.trainer.args,
            _hidden_size(self.critic),
            accelerator.num_processes,
        )
        engine, self.optimizer, _, self.scheduler = self._deepspeed_initialize(
            model=self.critic, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        self.module = engine

    @staticmethod
    def _deepspeed_initialize(**kwargs):
        import deepspeed

        return deepspeed.initialize(**kwargs)

    def _deepspeed_base(self) -> dict:
        """The run's DeepSpeed config, as accelerate built it for the policy."""
        return self.trainer.accelerator.state.deepspeed_plugin.deepspeed_config

    # -- training -----------------------------------------------------------------------------
    def backward(self, value_loss: torch.Tensor) -> bool:
        """DeepSpeed: the value loss through the critic's engine (``backward``, then ``step``,
        which DeepSpeed applies at the end of each accumulation). True when done here, False
        when the value loss belongs in the Trainer's loss (every other engine)."""
        if self.kind != DEEPSPEED:
            return False
        self.module.backward(value_loss)
        self.module.step()
        return True

    def clip(self, max_norm: float) -> float:
        """Clip the critic's gradients (DeepSpeed clips inside its step); returns the pre-clip norm."""
        if self.kind == DEEPSPEED:
            norm = self.module.get_global_grad_norm()
            return float(norm) if norm is not None else math.nan
        params = [p for p in self.critic.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        return float(norm)

    def step(self) -> None:
        """After the policy's optimizer step: the critic's own step (FSDP2), or its gradients zeroed
        (one process and DDP, where the policy's optimizer stepped it)."""
        if self.kind == FSDP2:
            self.optimizer.step()
            if not self.trainer.accelerator.optimizer_step_was_skipped:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        elif self.kind == PLAIN:
            self.critic.zero_grad(set_to_none=True)

    # -- saving and resuming ------------------------------------------------------------------
    def full_state_dict(self) -> dict | None:
        """The critic's full weights on the main process (None elsewhere; a collective under
        FSDP2 and ZeRO-3, so every process calls it); None also on one process and DDP,
        where the module's own ``state_dict`` is whole."""
        if self.kind == FSDP2:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            state = get_model_state_dict(self.critic, options=options)
            return state if self.trainer.accelerator.is_main_process else None
        if self.kind == DEEPSPEED and self.optimizer is not None:
            zero = self.module.config.get("zero_optimization", {}) if isinstance(self.module.config, dict) else {}
            if zero.get("stage") == 3:
                state = self.module._zero3_consolidated_16bit_state_dict()
                return state if self.trainer.accelerator.is_main_process else None
        return None

    def save(self, checkpoint: str | Path) -> None:
        """The critic and its optimizer into ``checkpoint/critic_engine`` in the engine's format
        (FSDP2, DeepSpeed; every process calls it). One process and DDP: nothing (the critic
        is in ``critic/``, its optimizer state in ``optimizer.pt``)."""
        if not self.own_optimizer or self.optimizer is None:
            return
        folder = Path(checkpoint) / ENGINE_DIR
        accelerator = self.trainer.accelerator
        if self.kind == FSDP2:
            from accelerate.utils import save_fsdp_model, save_fsdp_optimizer

            plugin = accelerator.state.fsdp_plugin
            save_fsdp_model(plugin, accelerator, self.critic, str(folder))
            save_fsdp_optimizer(plugin, accelerator, self.optimizer, self.critic, str(folder))
            if accelerator.is_main_process:
                torch.save(self.scheduler.state_dict(), folder / SCHEDULER)
        else:
            self.module.save_checkpoint(str(folder))

    def load(self, checkpoint: str | Path) -> None:
        """Restore what :meth:`save` wrote (on ``--resume``)."""
        folder = Path(checkpoint) / ENGINE_DIR
        if not folder.is_dir():
            raise RecipeError(
                f"checkpoint {checkpoint} has no {ENGINE_DIR}/ folder: it was not saved under this engine "
                f"({self.kind}), so the critic's sharded state and optimizer cannot be restored"
            )
        accelerator = self.trainer.accelerator
        if self.kind == FSDP2:
            from accelerate.utils import load_fsdp_model, load_fsdp_optimizer

            plugin = accelerator.state.fsdp_plugin
            load_fsdp_model(plugin, accelerator, self.critic, str(folder))
            load_fsdp_optimizer(plugin, accelerator, self.optimizer, self.critic, str(folder))
            self.scheduler.load_state_dict(torch.load(folder / SCHEDULER, weights_only=True))
        else:
            self.module.load_checkpoint(str(folder), load_module_strict=True)


@contextmanager
def _wrap_names_for(critic, plugin):
    """Preparing the policy fixed the FSDP plugin's block classes to the policy's; a critic of
    another architecture (``critic_init: PATH``) is wrapped by its own (``_no_split_modules``)."""
    from accelerate.utils.dataclasses import get_module_class_from_name

    names = getattr(plugin, "transformer_cls_names_to_wrap", None)
    if names and not any(get_module_class_from_name(critic, name) is not None for name in names):
        plugin.transformer_cls_names_to_wrap = None
    try:
        yield
    finally:
        plugin.transformer_cls_names_to_wrap = names


def _hidden_size(critic) -> int:
    config = getattr(critic, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(getattr(text, "hidden_size", 0) or 0)
