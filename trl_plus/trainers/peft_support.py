"""LoRA (PEFT) for both trainers: what TRL does not check, and PPO's critic on the shared base.

With a ``peft:`` section TRL wraps the policy in LoRA adapters and, with no reference model
given, computes the reference log-probs on the same model with its adapters switched off:
one copy of the base weights serves as policy and reference. This module adds:

- :func:`check_targets`: the section's ``target_modules`` exist in the loaded model (PEFT
  would fail later with a message that names no recipe key);
- :class:`SharedBaseCritic`: PPO's value function as a scalar head on the hidden states of
  that same base (the policy's adapters off, the critic's own small adapter on, no gradient
  into the base), so PPO with LoRA holds the base weights once: base + adapters + the
  critic's head and adapter; :func:`shared_critic` builds it new or from a saved ``critic/``;
- :func:`held_parameters`: how many parameters a trainer holds, each tensor counted once (to
  check that no model was copied).
"""

from __future__ import annotations

import copy
import json
import re
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from ..errors import RecipeError
from .critic_adapter import CriticAdapter
from .ppo_critic import (
    SHARED_CRITIC_INFO as VALUE_HEAD_CONFIG,
    SHARED_CRITIC_KIND as KIND,
    VALUE_HEAD,
    SavedSharedCritic,
    backbone_of,
    is_shared_critic_folder,
)

CRITIC_ADAPTER = "critic_adapter.safetensors"


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
    ``critic=`` model or path given) or from a critic saved on such a shared base (a
    ``critic/`` folder with a value head and no backbone). Any other critic is a separate
    model, as without PEFT. A saved shared-base critic without LoRA is refused."""
    from accelerate.utils import is_peft_model

    lora = peft_config is not None or (not isinstance(model, str) and is_peft_model(model))
    source = _saved_source(critic, critic_init)
    if source is not None:
        if not lora:
            raise RecipeError(
                f"{source} holds a value head (and adapter) for a LoRA policy's shared base, with no backbone of its "
                "own: it needs a peft: section (the same base model, with LoRA); give a full critic folder or a "
                "sequence-classification model otherwise",
                "ppo.critic_init",
            )
        return True
    if critic is not None and critic != "policy":
        return False
    if critic is None and critic_init != "policy":
        return False
    return lora


def _saved_source(critic, critic_init: str) -> str | None:
    """The folder of a saved shared-base critic that ``critic`` (or, without one, ``critic_init``) names."""
    if isinstance(critic, SavedSharedCritic):
        return critic.path
    name = critic if critic is not None else critic_init
    if isinstance(name, str) and name not in ("policy", "reward") and is_shared_critic_folder(name):
        return name
    return None


def shared_critic(policy, pad_token_id, args, critic=None) -> SharedBaseCritic:
    """The :class:`SharedBaseCritic` of a LoRA policy: new (adapter rank ``args.critic_adapter_r``),
    or the one saved in the folder ``critic`` or ``args.critic_init`` names, in its saved layout."""
    source = _saved_source(critic, args.critic_init)
    if source is None:
        return SharedBaseCritic(policy, pad_token_id, adapter_r=args.critic_adapter_r)
    layout = saved_layout(source) or {}
    model = SharedBaseCritic(policy, pad_token_id, adapter=layout.get("adapter"))
    model.load_saved(source)
    return model


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
    a linear head on the last hidden states of the base with the policy's LoRA adapters
    switched off, read through the critic's own small adapter (``critic_adapter.CriticAdapter``,
    rank ``critic_adapter_r``; none at 0).

    The policy is held by reference, not as a submodule, so the critic's parameters (and what
    its optimizer group, gradient clipping, saving and DDP see) are its head and adapter; the
    base never receives a gradient.

    Why an adapter: a head alone regresses the value on features that never move, so it can
    only learn what the frozen base already says. Measured on ``tiny-ppo``'s reward (the share
    of the letter e) with attention-only LoRA and an 8-step warm-up, on the tiny model
    fine-tuned briefly as in ``tests/test_ppo_lora_learns.py`` (3 seeds): explained variance
    after the warm-up averaged 0.09-0.25 with a head alone (dipping below 0) and 0.46-0.54
    with a rank-8 adapter (never below 0.2); 24 value-only steps reached 0.19 and 0.37. On the
    random tiny model (64 value-only steps) a head alone stayed below a constant throughout
    (-0.54 to -0.07), the adapter climbed to about 0 (-0.1 to 0.02 over the last 16 steps).
    The price: the value loss backpropagates through the base (without an adapter the base
    runs without gradient), and ``r x (vocab + hidden)`` plus ``r x (in + out)`` parameters
    per adapted layer.
    """

    def __init__(self, policy, pad_token_id: int | None = None, adapter_r: int = 0, adapter: dict | None = None):
        super().__init__()
        base = policy.get_base_model()
        self._policy = (policy,)  # a tuple: nn.Module does not register it as a submodule
        backbone = _backbone(base)  # fail at construction, not at the first rollout
        self.config = copy.deepcopy(base.config)
        self.config.num_labels = 1
        if pad_token_id is not None:
            self.config.pad_token_id = pad_token_id
        hidden = self.config.get_text_config().hidden_size
        self.score = nn.Linear(hidden, 1, bias=False, dtype=base.dtype, device=base.device)
        nn.init.zeros_(self.score.weight)
        if adapter is not None:  # the layout of a saved critic
            self.adapter = CriticAdapter(backbone, adapter["r"], adapter.get("alpha"), adapter.get("modules"))
        else:
            self.adapter = CriticAdapter(backbone, adapter_r) if adapter_r else None

    @property
    def policy(self):
        return self._policy[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.score.weight.dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.adapter is None or not torch.is_grad_enabled():
            with torch.no_grad() if self.adapter is None else nullcontext():
                hidden = self._hidden(input_ids, attention_mask)
        elif _checkpointing(self.policy.get_base_model()):
            # A checkpointed layer recomputes its forward in the backward pass, when the adapter's
            # hooks are off again: so the layers run unchecked here and the whole pass is one
            # checkpoint, which turns the hooks on itself when it recomputes.
            hidden = torch.utils.checkpoint.checkpoint(self._hidden, input_ids, attention_mask, use_reentrant=False)
        else:
            hidden = self._hidden(input_ids, attention_mask)
        return self.score(hidden.to(self.score.weight.dtype)).squeeze(-1)

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # The base runs through the policy's own forward (its output layer on one position), the
        # backbone's output kept by a hook: under FSDP2 a sharded policy gathers its weights in its
        # root's forward, which calling the backbone alone would skip.
        policy = self.policy
        base = policy.get_base_model()
        adapter = self.adapter.active() if self.adapter is not None else nullcontext()
        captured = []
        handle = _backbone(base).register_forward_hook(lambda m, a, out: captured.append(out))
        try:
            with policy.disable_adapter(), adapter, _layers_unchecked(base):
                policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        finally:
            handle.remove()
        out = captured[-1]
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    # -- saving: head and adapter (the base is the policy's, its adapter is saved beside) --
    def save_pretrained(self, folder: str | Path, state_dict: dict | None = None) -> None:
        """:param state_dict: the critic's full weights where its own are sharded (FSDP2)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        full = state_dict if state_dict is not None else self.state_dict()
        save_file({"score.weight": full["score.weight"].detach().contiguous().cpu()}, str(folder / VALUE_HEAD))
        info = {"kind": KIND, "hidden_size": self.score.in_features, "base": self.config._name_or_path,
                "adapter": self.adapter.describe() if self.adapter is not None else None}
        if self.adapter is not None:
            state = {k.removeprefix("adapter."): v.detach().contiguous().cpu() for k, v in full.items()
                     if k.startswith("adapter.")}
            save_file(state, str(folder / CRITIC_ADAPTER))
        (folder / VALUE_HEAD_CONFIG).write_text(json.dumps(info, indent=2))

    def load_saved(self, folder: str | Path) -> None:
        """Restore the head and adapter saved by :meth:`save_pretrained` (on resume, or from
        ``critic_init: <folder>``)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        path = folder / VALUE_HEAD
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
        saved_adapter = (saved_layout(folder) or {}).get("adapter")
        mine = self.adapter.describe() if self.adapter is not None else None
        if not _same_adapter(saved_adapter, mine):
            raise RecipeError(
                f"the critic in {folder} has adapter {saved_adapter}, this run's critic {mine}: set "
                "ppo.critic_adapter_r to the saved rank",
                "ppo.critic_adapter_r",
            )
        with torch.no_grad():
            self.score.weight.copy_(weight.to(self.score.weight.dtype))
            if self.adapter is not None:
                state = load_file(str(folder / CRITIC_ADAPTER))
                for name, tensor in self.adapter.state_dict().items():
                    if name not in state or state[name].shape != tensor.shape:
                        raise RecipeError(f"the critic adapter in {folder} does not fit this base model ({name})",
                                          "ppo.critic_init")
                    tensor.copy_(state[name].to(tensor.dtype))


def _checkpointing(model: nn.Module) -> bool:
    """Whether any layer of ``model`` has gradient (activation) checkpointing on."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


@contextmanager
def _layers_unchecked(model: nn.Module):
    """Gradient checkpointing off in every layer of ``model`` (transformers' per-layer flag) for a while."""
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    for layer in layers:
        layer.gradient_checkpointing = False
    try:
        yield
    finally:
        for layer in layers:
            layer.gradient_checkpointing = True


def _same_adapter(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return (int(a["r"]), float(a["alpha"]), list(a["modules"])) == (int(b["r"]), float(b["alpha"]), list(b["modules"]))


def saved_layout(folder) -> dict | None:
    """What ``value_head.json`` in a saved critic folder says (None when there is none)."""
    path = Path(str(folder)) / VALUE_HEAD_CONFIG
    return json.loads(path.read_text()) if path.is_file() else None


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
