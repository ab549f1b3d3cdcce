"""PPO start-up: the config conversion and the reference model, checked before RLOO builds anything."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import trl

from .ppo_config import PPOConfig

logger = logging.getLogger(__name__)


def _as_ppo_config(args, model) -> PPOConfig:
    if isinstance(args, PPOConfig):
        return args
    if args is None:
        name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
        return PPOConfig(output_dir=f"{Path(name).name}-PPO")
    if isinstance(args, trl.RLOOConfig):
        # Re-derive the generation batch from steps_per_generation, as RLOOConfig did.
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
        values["generation_batch_size"] = None
        if not args.disable_dropout:
            # RLOO's default (dropout on) breaks PPO's ratio; only a PPOConfig can keep dropout on.
            logger.warning("PPOTrainer turns dropout off (disable_dropout=True); pass a PPOConfig to keep it on")
            values["disable_dropout"] = True
        return PPOConfig(**values)
    raise TypeError(f"args must be a trl_plus.PPOConfig (or trl.RLOOConfig), got {type(args).__name__}")


def _ensure_reference_loadable(model, args, peft_config) -> None:
    """RLOO rebuilds the reference from ``model.config._name_or_path``; an in-memory policy has none."""
    from accelerate.utils import is_peft_model

    if peft_config is not None or is_peft_model(model):
        return  # the reference is the adapter-disabled base: no second copy
    name = getattr(model.config, "_name_or_path", "") or ""
    if Path(name).is_dir():
        return
    if name and not Path(name).is_absolute() and not name.startswith("."):
        return  # a hub id: RLOO loads the reference from it, as the policy was
    folder = tempfile.mkdtemp(prefix="trl-plus-ppo-ref-")
    model.save_pretrained(folder)
    model.config._name_or_path = folder
