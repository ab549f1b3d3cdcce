"""The PPO critic: a backbone's last hidden state through a linear value head, read per token.

The critic has its own backbone (so the policy stays a plain, ``from_pretrained``-loadable
causal LM that vLLM can sync). From the policy (``critic_init: policy``) it is a fresh copy
of the policy's backbone (``base_model_prefix``, e.g. ``LlamaModel`` inside
``LlamaForCausalLM``), built from the class already loaded, so any causal LM works,
remote code included, whether or not transformers has a sequence-classification class
for it; a policy without a separate backbone is copied whole and read through its last
hidden state. From a path (``critic_init: reward`` or a model path) it is the backbone and
score head of a one-label sequence-classification model.

Saved as ``critic/``: the backbone's ``save_pretrained`` output plus ``value_head.safetensors``.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from ..errors import RecipeError
from .ppo_engine import PLAIN, CriticEngine

HEAD_NAMES = ("score", "classifier")
VALUE_HEAD = "value_head.safetensors"


def value_head_of(model) -> nn.Linear:
    for name in HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            return head
    raise RecipeError(
        f"the critic {type(model).__name__} has no linear score head (looked for {', '.join(HEAD_NAMES)}); "
        "use a decoder sequence-classification model such as *ForSequenceClassification of a causal LM"
    )


def backbone_of(model) -> nn.Module | None:
    prefix = getattr(model, "base_model_prefix", "")
    backbone = getattr(model, prefix, None) if prefix else None
    return backbone if isinstance(backbone, nn.Module) else None


class ValueModel(nn.Module):
    """Per-token values ``[B, T]``: ``head(backbone(ids).last_hidden_state)``.

    This module is what the accelerator prepares, so that under DDP the critic's forward
    runs through the distributed wrapper and its gradients synchronise. ``whole_model``
    marks a backbone that is a whole causal LM (read through ``hidden_states[-1]``).
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear, whole_model: bool = False):
        super().__init__()
        self.backbone, self.head, self.whole_model = backbone, head, whole_model

    @classmethod
    def from_classifier(cls, model: nn.Module) -> ValueModel:
        """The backbone and score head of a (one-label) sequence-classification model."""
        if isinstance(model, ValueModel):
            return model
        head = value_head_of(model)
        backbone = backbone_of(model)
        if backbone is None:
            raise RecipeError(f"cannot find the backbone of critic {type(model).__name__}", "ppo.critic_init")
        if head.out_features != 1:
            raise RecipeError(f"the critic's score head has {head.out_features} outputs; a critic needs 1", "ppo.critic_init")
        return cls(backbone, head)

    @property
    def config(self):
        return self.backbone.config

    @property
    def _no_split_modules(self):
        """The backbone's block classes: what FSDP's transformer-based wrapping shards one by one."""
        return getattr(self.backbone, "_no_split_modules", None)

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"output_hidden_states": True} if self.whole_model else {}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
        if self.whole_model:
            hidden = out.hidden_states[-1]
        else:
            hidden = out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None else out[0]
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def save_pretrained(self, folder, state_dict: dict | None = None) -> None:
        """:param state_dict: the critic's full weights (keys ``backbone.*``, ``head.*``) where the module's own
            are sharded (FSDP2, ZeRO-3); default: the module's."""
        from safetensors.torch import save_file

        if state_dict is None:
            self.backbone.save_pretrained(folder)
            head = self.head.state_dict()
        else:
            backbone = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
            self.backbone.save_pretrained(folder, state_dict=backbone)
            head = {k.removeprefix("head."): v for k, v in state_dict.items() if k.startswith("head.")}
        save_file({k: v.detach().contiguous().cpu() for k, v in head.items()}, str(Path(folder) / VALUE_HEAD))

    def load_saved(self, folder) -> None:
        """Restore weights saved by :meth:`save_pretrained` (on resume)."""
        folder = Path(folder)
        if not (folder / VALUE_HEAD).is_file():
            raise RecipeError(f"{folder} has no {VALUE_HEAD}: it is not a critic this version of trl-plus saved")
        saved = type(self.backbone).from_pretrained(str(folder), dtype=self.dtype)
        self.backbone.load_state_dict(saved.state_dict())
        self.head.load_state_dict(_saved_head(folder / VALUE_HEAD, self.dtype).state_dict())


def _plain_state_dict(module: nn.Module) -> dict:
    """A backbone's weights without PEFT adapter layers (``base_layer`` renamed back)."""
    state = {}
    for key, value in module.state_dict().items():
        if "lora_" in key or ".modules_to_save." in key:
            continue
        state[key.replace(".base_layer.", ".")] = value
    return state


def critic_from_policy(policy: nn.Module, pad_token_id: int | None = None) -> ValueModel:
    """A copy of the policy's backbone (without adapters) and a zero value head."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
        raise RecipeError(
            "critic_init 'policy' cannot copy a quantized policy's backbone; set critic_init to a model path",
            "ppo.critic_init",
        )
    source = backbone_of(base)
    whole = source is None or not hasattr(type(source), "_from_config")
    if whole:
        source = base
    if not hasattr(type(source), "_from_config"):
        raise RecipeError(
            f"cannot build a critic from {type(base).__name__} (not a transformers model); pass critic=",
            "ppo.critic_init",
        )
    import copy

    config = copy.deepcopy(source.config)
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
    if any(hasattr(p, "ds_id") for p in source.parameters()):
        # DeepSpeed ZeRO-3 (zero3_init_flag): the policy's parameters are partitioned placeholders,
        # so the backbone is loaded (partitioned the same way) from the policy's own folder.
        name = getattr(base.config, "_name_or_path", "") or ""
        if not name:
            raise RecipeError("under ZeRO-3, critic_init 'policy' loads the critic from the policy's folder, and this "
                              "policy has none; pass the policy by path or set critic_init to a model path",
                              "ppo.critic_init")
        backbone = type(source).from_pretrained(name, config=config, dtype=source.dtype)
    else:
        backbone = type(source)._from_config(config, dtype=source.dtype)
        missing, _ = backbone.load_state_dict(_plain_state_dict(source), strict=False)
        if missing:
            raise RecipeError(f"the policy's backbone does not fit the critic: missing {missing[:5]}", "ppo.critic_init")
    hidden = config.get_text_config().hidden_size
    head = nn.Linear(hidden, 1, dtype=source.dtype)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    return ValueModel(backbone, head, whole_model=whole)


def load_critic(name_or_path: str, init_kwargs: dict | None = None, hooks=None) -> ValueModel | SavedSharedCritic:
    """A critic from a path or hub id: a critic folder that PPO saved (its backbone through
    ``AutoModel``, its value head), or a one-label sequence-classification model (through the
    ``load_model`` decision hook when given). A folder saved by a LoRA run (a value head and
    adapter for the shared base, no backbone) comes back as a :class:`SavedSharedCritic`."""
    from ..tiny import resolve

    if is_shared_critic_folder(name_or_path):
        return SavedSharedCritic(name_or_path)  # built on the policy's base by PPOTrainer (peft_support)
    kwargs = dict(init_kwargs or {})
    saved_head = Path(str(name_or_path)) / VALUE_HEAD
    try:
        if saved_head.is_file():
            from transformers import AutoModel

            backbone = AutoModel.from_pretrained(str(name_or_path), **kwargs)
            return ValueModel(backbone, _saved_head(saved_head, backbone.dtype))
        if hooks is not None:
            return ValueModel.from_classifier(hooks.load_model(name_or_path, "critic", kwargs))
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(resolve(name_or_path), num_labels=1, **kwargs)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot load critic {name_or_path!r}: {exc}", "ppo.critic_init") from None
    return ValueModel.from_classifier(model)


def _saved_head(path: Path, dtype: torch.dtype) -> nn.Linear:
    from safetensors.torch import load_file

    state = load_file(str(path))
    head = nn.Linear(state["weight"].size(1), 1, bias="bias" in state, dtype=dtype)
    head.load_state_dict(state)
    return head


class PPOCriticMixin:
    """How ``PPOTrainer`` builds, attaches and calls its critic (mixed in before ``trl.RLOOTrainer``)."""

    def _build_critic(self, critic, args, model, tokenizer, rewards):
        pad_id = tokenizer.pad_token_id if tokenizer is not None else None
        if critic is not None and not isinstance(critic, str):
            return ValueModel.from_classifier(critic)
        init = critic or args.critic_init
        if init == "policy":
            return None if isinstance(model, str) else critic_from_policy(model, pad_id)
        if init == "reward":
            path = reward_model_of(rewards)
            if path is None:
                raise RecipeError(
                    "critic_init 'reward' needs a 'reward_model' reward source with a model path in rewards=; "
                    "or pass critic= (a model or path)",
                    "ppo.critic_init",
                )
            init = path
        kwargs = dict(args.model_init_kwargs or {})
        kwargs.setdefault("trust_remote_code", args.trust_remote_code)
        return load_critic(init, kwargs, hooks=self.hooks)

    def _attach_critic(self, critic: ValueModel | None) -> None:
        """Check the critic against the policy's tokenizer, then prepare it (after RLOO's ``__init__``)."""
        if critic is None:  # the policy was given by name: RLOO loaded it
            critic = critic_from_policy(self.model, self._tokenizer.pad_token_id)
        critic_vocab = getattr(critic.config.get_text_config(), "vocab_size", None)
        if critic_vocab is not None and critic_vocab < len(self._tokenizer):
            raise RecipeError(
                f"the critic's vocabulary ({critic_vocab} tokens) is smaller than the policy tokenizer's "
                f"({len(self._tokenizer)}): the critic reads the policy's token ids, so it must share its tokenizer",
                "ppo.critic_init",
            )
        critic.config.pad_token_id = self._tokenizer.pad_token_id
        if self.args.disable_dropout:
            from trl.trainer.utils import disable_dropout_in_model

            disable_dropout_in_model(critic)
        self.critic = critic
        self.critic.train()
        if self.args.gradient_checkpointing and hasattr(self.critic, "gradient_checkpointing_enable"):
            # as the Trainer does for the policy (a value head on the shared base has no backbone of its own)
            self.critic.gradient_checkpointing_enable(self.args.gradient_checkpointing_kwargs)
        # The critic as the run's engine trains it (DDP-wrapped, sharded by FSDP2, or a DeepSpeed engine).
        self.critic_engine = CriticEngine(self, critic)

    @property
    def critic_optimizer(self):
        """The critic's own optimizer (FSDP2, DeepSpeed), or None where it is a group of the policy's."""
        return self.critic_engine.optimizer

    @property
    def critic_module(self):
        """What every critic forward goes through (the DDP wrapper, the sharded module, the DeepSpeed engine)."""
        return self.critic_engine.module

    def _values(self, inputs, batch_size: int | None = None) -> torch.Tensor:
        """The critic's value of each completion token's state (the position that predicts it),
        in chunks of ``batch_size`` rows as RLOO runs the policy and the reference."""
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        batch_size = batch_size or input_ids.size(0)
        chunks = []
        with self.accelerator.autocast():
            for start in range(0, input_ids.size(0), batch_size):
                rows = slice(start, start + batch_size)
                chunks.append(self.critic_module(input_ids[rows], attention_mask[rows]))
        start = prompt_ids.size(1) - 1
        return torch.cat(chunks)[:, start : start + completion_ids.size(1)].float()

    def _reuses_rollout_values(self, mode: str) -> bool:
        """Whether the rollout's critic forward is also the loss's: on-policy training (one minibatch, one
        epoch per rollout) runs the loss once on the rollout batch before the critic steps (same rows, same
        weights), so one forward serves both. Kept to the engines it is tested on (one process, DDP)."""
        return (
            mode == "train"
            and torch.is_grad_enabled()
            and self.args.steps_per_generation == 1
            and self.num_iterations == 1
            and self.critic_engine.kind == PLAIN
            and any(p.requires_grad for p in self.critic.parameters())
        )

    def _rollout_values(self, inputs, mode: str) -> torch.Tensor:
        from trl.models.utils import disable_gradient_checkpointing

        args = self.args
        batch_size = args.per_device_train_batch_size if mode == "train" else args.per_device_eval_batch_size
        if self._reuses_rollout_values(mode):
            # With gradients, for the loss too (ppo_rollout keeps it as "values_for_loss"). The rows run in the
            # order RLOO's shuffle is about to draw (the same draw: torch's generator is restored after it), so
            # the critic's backward sums its gradients in the order a forward in the loss would: the same
            # numbers bit for bit (were the draw ever another, only that summation order would differ).
            state = torch.get_rng_state()
            order = torch.randperm(inputs["prompt_ids"].size(0))
            torch.set_rng_state(state)
            rows = {k: inputs[k][order] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")}
            return self._values(rows, batch_size)[torch.argsort(order)]
        backbone = getattr(self.critic, "backbone", None)  # None: a value head on the shared base
        checkpointing = getattr(backbone, "is_gradient_checkpointing", False)
        off = disable_gradient_checkpointing(backbone, args.gradient_checkpointing_kwargs) if checkpointing else nullcontext()
        with torch.no_grad(), off:
            return self._values(inputs, batch_size)


def reward_model_of(specs) -> str | None:
    """The model of the first ``reward_model`` reward source among recipe specs, if any."""
    for spec in specs or []:
        if isinstance(spec, dict) and spec.get("name") == "reward_model" and isinstance(spec.get("model"), str):
            return spec["model"]
    return None


# -- a critic saved on a LoRA policy's shared base (``peft_support.SharedBaseCritic``) ----------

SHARED_CRITIC_INFO = "value_head.json"
SHARED_CRITIC_KIND = "shared-base-value-head"


class SavedSharedCritic:
    """A ``critic/`` folder holding a value head (and the critic's adapter) for a LoRA policy's
    shared base, with no backbone of its own: ``PPOTrainer`` builds the critic on its policy's
    base and loads the folder into it (``peft_support.shared_critic``)."""

    def __init__(self, path):
        self.path = str(path)

    def __repr__(self) -> str:
        return f"SavedSharedCritic({self.path!r})"


def is_shared_critic_folder(path) -> bool:
    """Whether ``path`` is a critic folder saved on a LoRA policy's shared base."""
    import json

    info = Path(str(path)) / SHARED_CRITIC_INFO
    if not info.is_file():
        return False
    try:
        return json.loads(info.read_text()).get("kind") == SHARED_CRITIC_KIND
    except (OSError, ValueError):
        return False
