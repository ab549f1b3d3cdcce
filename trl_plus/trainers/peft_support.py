"""LoRA (PEFT) for both trainers: what TRL does not check, and PPO's critic on the shared base.

With a ``peft:`` section TRL wraps the policy in LoRA adapters and, with no reference model
given, computes the reference log-probs on the same model with its adapters switched off:
one copy of the base weights serves as policy and reference. This module adds:

- :func:`check_targets`: the section's ``target_modules`` exist in the loaded model (PEFT
  would fail later with a message that names no recipe key);
- :class:`SharedBaseCritic`: PPO's value function as a scalar head on the hidden states of
  that same base (adapters off, no gradient into the base), so PPO with LoRA holds the base
  weights once: base + adapters + one ``hidden_size`` x 1 head;
- :func:`held_parameters`: how many parameters a trainer holds, each tensor counted once (to
  check that no model was copied).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import RecipeError
from .ppo_critic import VALUE_HEAD, backbone_of

VALUE_HEAD_CONFIG = "value_head.json"
KIND = "shared-base-value-head"


# -- the recipe's target modules against the loaded model -------------------------------------


def check_targets(model, config, where: str = "peft.target_modules") -> None:
    """Raise :class:`RecipeError` naming ``where`` when ``config.target_modules`` (a
    ``peft.LoraConfig``) names a module ``model`` lacks, or its output layer, or is left
    to PEFT's defaults for an architecture PEFT has none for; before PEFT wraps it."""
    if config is None:
        return
    names = [name for name, _ in model.named_modules() if name]
    targets = config.target_modules
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_name = next((name for name, m in model.named_modules() if head is not None and m is head), None)
    leaf_names = sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head}
    )
    if head_name and _matches(targets, head_name):
        # TRL's trainers compute log-probs from the output layer's weight itself, so an adapter there never trains.
        raise RecipeError(
            f"the output layer {head_name!r} cannot take a LoRA adapter (TRL computes log-probs from its weight "
            "directly); leave it out, or train it fully with modules_to_save",
            where,
        )
    if targets is None:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        model_type = getattr(model.config, "model_type", None)
        if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
            raise RecipeError(
                f"PEFT has no default target modules for model type {model_type!r}: list them "
                f"(linear layers of this model: {', '.join(leaf_names)}) or write 'all-linear'",
                where,
            )
        return
    if targets == "all-linear":
        return
    if isinstance(targets, str):
        if not any(_matches(targets, name) for name in names):
            raise RecipeError(f"the pattern {targets!r} matches no module name of the model", where)
        return
    missing = sorted(t for t in targets if not any(_matches([t], name) for name in names))
    if missing:
        raise RecipeError(
            f"no module named {', '.join(repr(m) for m in missing)} in {type(model).__name__}; "
            f"its linear layers: {', '.join(leaf_names)}",
            where,
        )


def _matches(targets, name: str) -> bool:
    """Whether PEFT would put an adapter on module ``name``: a regex matching the full name,
    or a name list holding the module's name or a dotted suffix of it."""
    if targets is None or targets == "all-linear":
        return False  # PEFT's defaults and all-linear leave the output layer out
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


# -- PPO: the critic on the shared base ---------------------------------------------------------


def wants_shared_critic(critic, critic_init: str, model, peft_config) -> bool:
    """Whether PPO's critic should be a :class:`SharedBaseCritic`: the policy trains LoRA
    adapters and the critic is to start from the policy (``critic_init: policy``, no
    ``critic=`` model or path given). Any other critic is a separate model, as without PEFT."""
    from accelerate.utils import is_peft_model

    if critic is not None and critic != "policy":
        return False
    if critic is None and critic_init != "policy":
        return False
    return peft_config is not None or (not isinstance(model, str) and is_peft_model(model))


def _backbone(model) -> nn.Module:
    backbone = backbone_of(model)
    if backbone is None:
        prefix = getattr(model, "base_model_prefix", "")
        raise RecipeError(
            f"cannot find the backbone of {type(model).__name__} (base_model_prefix {prefix!r}) for the value head; "
            "set ppo.critic_init to a sequence-classification model instead",
            "ppo.critic_init",
        )
    return backbone


class SharedBaseCritic(nn.Module):
    """PPO's value function on the policy's own base weights: per-token values ``[B, T]`` from
    a linear head on the last hidden states of the base with the LoRA adapters switched off.

    The policy is held by reference, not as a submodule, so the critic's parameters (and what
    its optimizer group, gradient clipping, saving and DDP see) are the head alone. The base
    runs without gradient: only the head learns, on features that do not move during training
    (a stable regression target; weaker than a critic with its own trainable backbone).
    """

    def __init__(self, policy, pad_token_id: int | None = None):
        super().__init__()
        base = policy.get_base_model()
        self._policy = (policy,)  # a tuple: nn.Module does not register it as a submodule
        _backbone(base)  # fail at construction, not at the first rollout
        self.config = copy.deepcopy(base.config)
        self.config.num_labels = 1
        if pad_token_id is not None:
            self.config.pad_token_id = pad_token_id
        hidden = self.config.get_text_config().hidden_size
        self.score = nn.Linear(hidden, 1, bias=False, dtype=base.dtype, device=base.device)
        nn.init.zeros_(self.score.weight)

    @property
    def policy(self):
        return self._policy[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.score.weight.dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        policy = self.policy
        # The base runs through the policy's own forward (its output layer on one position only), its
        # backbone's output kept by a hook: under FSDP2 a sharded policy gathers its weights in its
        # root's forward, which calling the backbone alone would skip.
        captured = []
        handle = _backbone(policy.get_base_model()).register_forward_hook(lambda m, a, out: captured.append(out))
        try:
            with torch.no_grad(), policy.disable_adapter():
                policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        finally:
            handle.remove()
        out = captured[-1]
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.score(hidden.to(self.score.weight.dtype)).squeeze(-1)

    # -- saving: the head only (the base is the policy's, the adapter is saved beside) --
    def save_pretrained(self, folder: str | Path, state_dict: dict | None = None) -> None:
        """:param state_dict: the head's full weights where the module's own are sharded (FSDP2)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weight = (state_dict or {}).get("score.weight", self.score.weight)
        save_file({"score.weight": weight.detach().contiguous().cpu()}, str(folder / VALUE_HEAD))
        info = {"kind": KIND, "hidden_size": self.score.in_features, "base": self.config._name_or_path}
        (folder / VALUE_HEAD_CONFIG).write_text(json.dumps(info, indent=2))

    def load_saved(self, folder: str | Path) -> None:
        """Restore the head saved by :meth:`save_pretrained` (on resume)."""
        from safetensors.torch import load_file

        path = Path(folder) / VALUE_HEAD
        if not path.is_file():
            raise RecipeError(
                f"{folder} holds no {VALUE_HEAD}: the checkpoint's critic is not a value head on the shared "
                "base (was it trained without peft:, or with another critic_init?)"
            )
        weight = load_file(str(path))["score.weight"]
        if weight.shape != self.score.weight.shape:
            raise RecipeError(
                f"the value head in {folder} has shape {tuple(weight.shape)}, this policy needs "
                f"{tuple(self.score.weight.shape)}: the checkpoint is from another base model"
            )
        with torch.no_grad():
            self.score.weight.copy_(weight.to(self.score.weight.dtype))


# -- memory: parameters held --------------------------------------------------------------------


def held_parameters(trainer) -> int:
    """Parameters of every model a trainer holds (policy, reference, critic, ...), each tensor
    counted once however many modules share it."""
    seen: dict[int, int] = {}
    for value in vars(trainer).values():
        if isinstance(value, nn.Module):
            for p in value.parameters():
                seen[id(p)] = p.numel()
    return sum(seen.values())
