"""PPO start-up: the config conversion, the reference model, and what PPO refuses, checked before RLOO builds anything."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import trl

from ..errors import RecipeError
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


def refuse_schedule_without_reference(args) -> None:
    """beta 0 means no reference model (RLOO builds none), so no KL to schedule."""
    if args.beta == 0:
        raise RecipeError(
            "a KL schedule needs the reference model, which beta 0 turns off: set beta > 0 (the schedule "
            "replaces it from the first rollout) or drop the kl schedule for a run without KL penalty",
            "kl",
        )


def refuse_vision_language(processing_class, trainer=None) -> None:
    """Refuse a processor (a vision-language policy): the critic and PPO's loss read token ids only,
    so the ratio would compare the rollout's image-conditioned log-probs with text-only ones."""
    from transformers import ProcessorMixin

    if isinstance(processing_class, ProcessorMixin) or getattr(trainer, "_is_vlm", False):
        raise RecipeError(
            "PPOTrainer does not support vision-language models (a processor as processing_class): its critic "
            "and loss see token ids only, not pixel_values. Use trl.RLOOTrainer for them, or pass the tokenizer "
            "(processor.tokenizer) to train on text only",
            "processing_class",
        )
