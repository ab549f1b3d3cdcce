"""Training from a recipe: one path for every trainer kind.

``trl-plus train``, the pipeline's policy runs and Python callers all come here. What
differs between kinds is what its :class:`trl_plus.protocols.TrainerKind` provides (the
trainer and config classes, the columns its data needs, a ``check`` of the recipe, and
``build``, which makes the trainer); everything else is done once, in one order:

1. the output folder is checked and held for the run (``run_folder.claim``);
2. the tokenizer and the data splits, which must have the kind's columns;
3. the kind's ``check`` (what it refuses before any model loads);
4. the trainer's config, before any model: under ``accelerate launch`` with DeepSpeed
   ZeRO-3 building it turns on sharded loading (``zero3_init_flag``), so the models load
   sharded, not whole on every rank;
5. the policy model (through the ``trl_plus_load_model`` hook) and its LoRA settings;
6. the kind's ``build``, the compute counter (``compute.attach``: ``compute.json`` in every
   checkpoint and the final folder), then training under ``checkpointing.train`` (signals,
   divergence, failed saves) and the final save (``save_run``).
"""

from __future__ import annotations

import time

from .. import checkpointing, loading
from ..data.splits import load_split, require_columns
from ..errors import RecipeError
from ..recipe import build_trainer_config
from ..run_folder import claim
from . import compute, peft_support
from .common import hooks_for, save_run

__all__ = ["train_from_recipe", "trainer_kind"]


def train_from_recipe(recipe, output_dir: str, hooks=None, resume_from_checkpoint=None, overwrite=False):
    """Build everything a trainer recipe describes, train, and save into ``output_dir``;
    returns the trainer.

    :param hooks: a ``trl_plus.Hooks`` or pluggy manager (its trainer kinds, components and
        loaders); a fresh default one if None.
    :param resume_from_checkpoint: None, True (the last complete checkpoint in
        ``output_dir``) or a checkpoint folder.
    :param overwrite: replace a run already in ``output_dir``.
    """
    # checks the folder and holds it for the run; the CLI's claim of the same folder is shared
    with claim(output_dir, recipe.trainer, resume_from_checkpoint, overwrite, recipe) as resume:
        return _train(recipe, output_dir, hooks_for(hooks), resume)


def trainer_kind(hooks, name: str):
    """The :class:`~trl_plus.protocols.TrainerKind` a recipe's ``trainer: <name>`` names."""
    kinds = hooks.trainer_kinds
    if name not in kinds:
        raise RecipeError(f"unknown trainer {name!r}; the trainers are {', '.join(sorted(kinds))}", "trainer")
    return kinds[name]


def _train(recipe, output_dir: str, hooks, resume):
    kind = trainer_kind(hooks, recipe.trainer)
    trainer_class = kind.trainer_class
    started = time.time()
    tokenizer = loading.load_tokenizer(recipe.model)
    train, train_report = load_split(recipe.data.train, hooks, "data.train", recipe.data.on_error)
    require_columns(train, list(kind.columns), "data.train")
    evaluation, eval_report = load_split(recipe.data.eval, hooks, "data.eval", recipe.data.on_error)
    if evaluation is not None:
        require_columns(evaluation, list(kind.columns), "data.eval")
    if kind.check is not None:
        kind.check(recipe)
    args = build_trainer_config(recipe.spec, output_dir, hooks=hooks, **checkpointing.checkpoint_defaults(recipe))
    model = loading.load_model(recipe.model, hooks, "policy")
    peft = loading.peft_config(recipe.peft)
    peft_support.check_targets(model, peft)
    kwargs = dict(
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft,
        rewards=[r.model_dump() for r in recipe.rewards] or None,
        kl=recipe.kl.model_dump() if recipe.kl else None,
        filters=[f.model_dump() for f in recipe.filters],
        plugin_manager=hooks,
        recipe=recipe,
        load_reports={"train": train_report, "eval": eval_report},
    )
    trainer = (kind.build or _construct)(trainer_class, model, **kwargs)
    compute.attach(trainer)  # every kind's checkpoints record what they cost (once: a trainer may attach it itself)
    # the final save runs under the signal handlers: a signal during it lets it finish
    checkpointing.train(trainer, resume, recipe, save=lambda: save_run(trainer, output_dir, recipe, started))
    return trainer


def _construct(trainer_class, model, **kwargs):
    """A kind without a ``build`` of its own: the trainer class takes the model and the rest."""
    return trainer_class(model, **kwargs)
