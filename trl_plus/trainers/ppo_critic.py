"""The PPO critic: a one-label sequence-classification model read per token.

The critic has its own backbone (so the policy stays a plain, ``from_pretrained``-loadable
causal LM that vLLM can sync) and its value head is the classification model's score
head applied to every position's hidden state, not just the last one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import RecipeError

HEAD_NAMES = ("score", "classifier")


def value_head_of(model) -> nn.Linear:
    for name in HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            return head
    raise RecipeError(
        f"the critic {type(model).__name__} has no linear score head (looked for {', '.join(HEAD_NAMES)}); "
        "use a decoder sequence-classification model such as *ForSequenceClassification of a causal LM"
    )


def backbone_of(model) -> nn.Module:
    prefix = getattr(model, "base_model_prefix", "")
    backbone = getattr(model, prefix, None) if prefix else None
    if backbone is None:
        raise RecipeError(f"cannot find the backbone of critic {type(model).__name__} (base_model_prefix {prefix!r})")
    return backbone


class ValueModel(nn.Module):
    """Per-token values ``[B, T]`` of a sequence-classification model.

    This wrapper (not the classification model) is what the accelerator prepares, so that
    under DDP the critic's forward runs through the distributed wrapper and its gradients
    synchronise. Its only submodule is the classification model, saved as-is.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        value_head_of(model)  # fail at construction, not at the first rollout
        backbone_of(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = backbone_of(self.model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        head = value_head_of(self.model)
        return head(hidden.to(head.weight.dtype)).squeeze(-1)


def _plain_state_dict(module: nn.Module) -> dict:
    """A backbone's weights without PEFT adapter layers (``base_layer`` renamed back)."""
    state = {}
    for key, value in module.state_dict().items():
        if "lora_" in key or ".modules_to_save." in key:
            continue
        state[key.replace(".base_layer.", ".")] = value
    return state


def critic_from_policy(policy: nn.Module, pad_token_id: int | None = None) -> nn.Module:
    """A one-label classification model with the policy's backbone weights and a zero value head."""
    from transformers import AutoModelForSequenceClassification

    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    config = copy.deepcopy(base.config)
    config.num_labels = 1
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
    try:
        critic = AutoModelForSequenceClassification.from_config(config, dtype=base.dtype)
    except ValueError as exc:
        raise RecipeError(
            f"no sequence-classification model for {type(base).__name__}: {exc}; set critic_init to a model path",
            "ppo.critic_init",
        ) from None
    missing, unexpected = backbone_of(critic).load_state_dict(_plain_state_dict(backbone_of(base)), strict=False)
    if missing:
        raise RecipeError(f"the policy's backbone does not fit the critic: missing {missing[:5]}", "ppo.critic_init")
    head = value_head_of(critic)
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()
    return critic


def load_critic(name_or_path: str, init_kwargs: dict | None = None, hooks=None) -> nn.Module:
    """A critic from a path or hub id (through the ``load_model`` decision hook when given)."""
    from ..tiny import resolve

    kwargs = dict(init_kwargs or {})
    if hooks is not None:
        return hooks.load_model(name_or_path, "critic", kwargs)
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(resolve(name_or_path), num_labels=1, **kwargs)
    except OSError as exc:
        raise RecipeError(f"cannot load critic {name_or_path!r}: {exc}", "ppo.critic_init") from None


def reward_model_of(specs) -> str | None:
    """The model of the first ``reward_model`` reward source among recipe specs, if any."""
    for spec in specs or []:
        if isinstance(spec, dict) and spec.get("name") == "reward_model" and isinstance(spec.get("model"), str):
            return spec["model"]
    return None
