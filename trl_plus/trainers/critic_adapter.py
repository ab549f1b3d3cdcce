"""The critic's own low-rank adapter on a LoRA policy's shared base (``peft_support.SharedBaseCritic``)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RecipeError


class CriticAdapter(nn.Module):
    """The critic's own low-rank adapter on the shared base, active only during the critic's pass.

    A rank-``r`` delta on the input embedding (a learned ``r``-dimensional code per token id,
    projected to the hidden size) and on each module the policy's LoRA adapts (its frozen
    ``base_layer``): ``W x + (alpha / r) B A x``. The deltas are added by forward hooks on
    those modules while :meth:`active` is on, so the policy, its reference (the same base with
    the policy's adapters off) and the critic share one copy of the base weights, and the
    critic's parameters (head and adapter) stay a module of their own: their own optimizer
    group, gradient clipping, DDP wrapper and ``critic/`` folder. Each delta starts at zero,
    so a new critic reads the plain base.
    """

    def __init__(self, backbone: nn.Module, r: int, alpha: float | None = None, modules: list[str] | None = None):
        """``modules``: names in ``backbone`` of the linear layers to adapt (default: those the
        policy's LoRA adapts); ``alpha``: the scaling numerator (default ``2 r``, PEFT's usual)."""
        super().__init__()
        self.r, self.alpha = int(r), float(alpha if alpha is not None else 2 * r)
        self._on = False
        self._hooks = []
        named = dict(backbone.named_modules())
        embedding = backbone.get_input_embeddings()
        self.embedding_name = next(name for name, m in named.items() if m is embedding)
        self.module_names = list(modules) if modules is not None else _adapted_linears(backbone)
        missing = [name for name in self.module_names if name not in named]
        if missing:
            raise RecipeError(
                f"the critic adapter's modules {', '.join(missing[:5])} are not in this base model: the saved "
                "critic was trained on another architecture",
                "ppo.critic_init",
            )
        param = next(backbone.parameters())
        self.embedding_A = nn.Parameter(torch.zeros(embedding.weight.size(0), self.r, device=param.device))
        code = torch.randn(self.r, embedding.weight.size(1), device=param.device) / self.r**0.5
        self.embedding_B = nn.Parameter(code)
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        for name in self.module_names:
            linear = _base_linear(named[name])
            key = name.replace(".", "__")
            a = torch.empty(self.r, linear.in_features, device=param.device)
            nn.init.kaiming_uniform_(a, a=5**0.5)
            self.lora_A[key] = nn.Parameter(a)
            self.lora_B[key] = nn.Parameter(torch.zeros(linear.out_features, self.r, device=param.device))
            self._hooks.append(linear.register_forward_hook(self._linear_hook(key)))
        self._hooks.append(embedding.register_forward_hook(self._embedding_hook))

    @contextmanager
    def active(self):
        self._on = True
        try:
            yield
        finally:
            self._on = False

    def _embedding_hook(self, module, args, output):
        if not self._on:
            return output
        delta = F.embedding(args[0], self.embedding_A) @ self.embedding_B
        return output + (self.alpha / self.r) * delta.to(output.dtype)

    def _linear_hook(self, key: str):
        def hook(module, args, output):
            if not self._on:
                return output
            a, b = self.lora_A[key], self.lora_B[key]
            delta = F.linear(F.linear(args[0].to(a.dtype), a), b)
            return output + (self.alpha / self.r) * delta.to(output.dtype)

        return hook

    def describe(self) -> dict:
        return {"r": self.r, "alpha": self.alpha, "embedding": self.embedding_name, "modules": self.module_names}

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []


def _base_linear(module: nn.Module) -> nn.Linear:
    """The frozen linear layer inside a PEFT LoRA layer (or the module itself)."""
    base = getattr(module, "base_layer", module)
    if not isinstance(base, nn.Linear):
        raise RecipeError(
            f"the critic's adapter needs plain linear layers, {type(base).__name__} is not one (a quantized base?): "
            "set ppo.critic_adapter_r to 0 for a value head alone",
            "ppo.critic_adapter_r",
        )
    return base


def _adapted_linears(backbone: nn.Module) -> list[str]:
    """Names (in ``backbone``) of the linear layers the policy's LoRA adapts."""
    from peft.tuners.lora import LoraLayer

    return [
        name for name, m in backbone.named_modules() if isinstance(m, LoraLayer) and isinstance(m.base_layer, nn.Linear)
    ]
