"""Runs that cannot be lost: default checkpointing, resume, signals, divergence, failed saves.

- :func:`checkpoint_defaults` keeps a checkpoint along every recipe that says nothing
  about saving.
- :func:`train` runs ``trainer.train()`` so that SIGINT/SIGTERM save a resumable
  ``checkpoint-N`` at the next step boundary (then :class:`TrainingInterrupted`), a
  failed save leaves no half-written checkpoint behind (then :class:`SaveError`), a NaN or
  infinite loss or gradient norm stops the run at that step without saving (then
  :class:`TrainingDiverged`), and a signal during the final save lets it finish.

The output folder itself (its checks before a run, :func:`prepare_output_dir`, which
resolves ``resume`` to a complete checkpoint of the recipe's trainer or a one-line error;
which checkpoints are complete, :func:`last_checkpoint`) is ``trl_plus.run_folder``'s;
its names are here too, where callers have always found them.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import threading
from pathlib import Path

from .errors import SaveError
from .run_folder.checkpoints import complete_checkpoints, is_checkpoint, last_checkpoint, saved_state
from .run_folder.claims import prepare_output_dir
from .run_folder.contents import run_files
from .run_folder.stops import EXIT_CODES, TrainingDiverged, TrainingInterrupted

__all__ = [
    "TrainingDiverged", "TrainingInterrupted", "checkpoint_defaults", "complete_checkpoints", "is_checkpoint",
    "last_checkpoint", "nonfinite_weights", "prepare_output_dir", "run_files", "save_failure", "train",
]

log = logging.getLogger("trl_plus")

# Used where a recipe sets none of these: a checkpoint every 10% of the run, at most
# DEFAULT_MAX_SAVE_INTERVAL steps apart, the last two kept.
SAVE_KEYS = ("save_strategy", "save_steps", "save_total_limit")
DEFAULT_SAVE = {"save_strategy": "steps", "save_steps": 0.1, "save_total_limit": 2}
DEFAULT_MAX_SAVE_INTERVAL = 500


def checkpoint_defaults(recipe) -> dict:
    """Trainer-config overrides that keep checkpoints along a run whose recipe sets no save settings."""
    section = recipe.trainer_args
    if any(key in section for key in SAVE_KEYS) or section.get("load_best_model_at_end"):
        return {}
    return dict(DEFAULT_SAVE)


# -- during a run ----------------------------------------------------------------------------


class _Checkpointing:
    """Stops at the next step boundary after a signal, with a checkpoint; stops a run whose
    loss or gradient norm is not finite, without one; caps the default interval.

    A ``TrainerCallback`` once :func:`_callback` mixes it in (importing transformers only
    when training, so that this module stays light for the CLI's early checks).
    """

    def __init__(self, trainer, cap_interval: bool):
        self.trainer = trainer
        self.cap_interval = cap_interval
        self.signum: int | None = None
        self.stopped = False
        self.phase = "training"  # or "final save"
        self.diverged: tuple[int, str] | None = None  # (step, what was not finite)
        self._losses: list = []  # this optimizer step's micro-batch losses (tensors: read once per step)
        self._grad_norm = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.cap_interval and state.save_steps > DEFAULT_MAX_SAVE_INTERVAL:
            state.save_steps = DEFAULT_MAX_SAVE_INTERVAL
        self.trainer.start_step = state.global_step

    # what Trainer's loop hands back, kept for on_step_end (see train())
    def note_loss(self, loss) -> None:
        if hasattr(loss, "detach"):
            self._losses.append(loss.detach())

    def note_grad_norm(self, value) -> None:
        self._grad_norm = value

    def on_step_end(self, args, state, control, **kwargs):
        problem = self._not_finite()
        signalled, diverged = self._any_process(self.signum is not None, problem is not None)
        if diverged:
            control.should_save = False
            control.should_evaluate = False
            control.should_training_stop = True
            self.diverged = (state.global_step, problem or "on another process")
        elif signalled:
            control.should_save = True
            control.should_training_stop = True
            self.stopped = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.diverged:
            control.should_save = False
            control.should_evaluate = False
        return control

    def _not_finite(self) -> str | None:
        """What was not finite in the step that just ended (None: all was)."""
        import math

        import torch

        losses, self._losses = self._losses, []
        grad_norm, self._grad_norm = self._grad_norm, None
        values = torch.stack([x.float().mean() for x in losses]).tolist() if losses else []
        bad_loss = next((v for v in values if not math.isfinite(v)), None)
        norm = float(grad_norm) if grad_norm is not None else None
        # fp16 with loss scaling skips the optimizer step of an infinite gradient: not a divergence
        skipped = bool(getattr(getattr(self.trainer, "accelerator", None), "optimizer_step_was_skipped", False))
        bad_norm = norm is not None and not math.isfinite(norm) and not skipped
        parts = ([f"the loss is {bad_loss}"] if bad_loss is not None else []) + (
            [f"the gradient norm is {norm}"] if bad_norm else [])
        return " and ".join(parts) or None

    def _any_process(self, *flags: bool) -> tuple[bool, ...]:
        accelerator = getattr(self.trainer, "accelerator", None)
        if accelerator is None or accelerator.num_processes == 1:
            return flags
        import torch

        # Every rank must stop at the same step, or the others wait for it forever.
        total = accelerator.reduce(torch.tensor([float(f) for f in flags], device=accelerator.device), "sum")
        return tuple(bool(v > 0) for v in total.tolist())

    def _any_process_signalled(self) -> bool:
        return self._any_process(self.signum is not None)[0]

    def handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: stop now, without a checkpoint
            state = getattr(self.trainer, "state", None)
            raise TrainingInterrupted(signum, last_checkpoint(self.trainer.args.output_dir),
                                      getattr(state, "global_step", 0), how="at_once")
        self.signum = signum
        if self.phase == "final save":
            log.warning("trl-plus: %s received during the final save: finishing it first (send it again to stop at "
                        "once; the final model would then be incomplete)", signal.Signals(signum).name)
        else:
            log.warning("trl-plus: %s received: saving a checkpoint at the end of this step "
                        "(send it again to stop at once, without one)", signal.Signals(signum).name)


def _callback(trainer, cap_interval: bool):
    from transformers import TrainerCallback

    return type("Checkpointing", (_Checkpointing, TrainerCallback), {})(trainer, cap_interval)


def nonfinite_weights(trainer) -> bool:
    """Whether any trained weight (the model's, and the optimizer's groups: PPO's critic) is
    NaN or infinite, on any process (each reads its own shard). Read in slices, so that no
    copy of a whole tensor is made."""
    import torch

    params = {id(p): p for p in trainer.model.parameters()}
    optimizer = getattr(trainer, "optimizer", None)
    for group in getattr(optimizer, "param_groups", None) or []:
        params.update((id(p), p) for p in group["params"])
    bad = False
    for p in params.values():
        # this process's shard: DeepSpeed ZeRO-3 keeps it in ds_tensor, FSDP 2 in the DTensor's local part
        local = getattr(p, "ds_tensor", None)
        if local is None:
            local = p.to_local() if hasattr(p, "to_local") else p
        if not local.is_floating_point() or local.numel() == 0:
            continue
        flat = local.detach().reshape(-1)
        for start in range(0, flat.numel(), 1 << 24):
            if not bool(torch.isfinite(flat[start:start + (1 << 24)]).all()):
                bad = True
                break
        if bad:
            break
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is not None and accelerator.num_processes > 1:
        flag = torch.tensor([float(bad)], device=accelerator.device)
        bad = bool(accelerator.reduce(flag, "sum").item() > 0)
    return bad


def _diverged(trainer, step: int, what: str) -> TrainingDiverged:
    recipe = getattr(trainer, "recipe", None)
    section = getattr(recipe, "trainer", None) if recipe is not None else None
    lr = getattr(trainer.args, "learning_rate", None)
    setting = f"{section}.learning_rate" if section else "learning_rate"
    last = last_checkpoint(trainer.args.output_dir)
    kept = f"the last complete checkpoint is {last}" if last else "no checkpoint was saved"
    return TrainingDiverged(
        f"training diverged at step {step}: {what}; the model was not saved ({kept}). Lower {setting} "
        f"(it is {lr:g}) or look at the data and rewards of that step, then train again"
        + (" (--resume continues from that checkpoint)" if last else ""),
        step,
    )


def _guard_saves(trainer, callback=None) -> None:
    """Wrap the trainer's checkpoint save: a failure removes the half-written folder and
    becomes a :class:`SaveError` naming it (the previous checkpoint is left as it was); a
    model whose weights are not finite is not saved (:class:`TrainingDiverged`)."""
    save = trainer._save_checkpoint

    def save_checkpoint(model, trial):
        if callback is not None and callback.diverged:
            return  # never a checkpoint of a diverged model
        if nonfinite_weights(trainer):
            raise _diverged(trainer, trainer.state.global_step, "the weights hold NaN or infinite values")
        folder = Path(trainer._get_output_dir(trial=trial)) / f"checkpoint-{trainer.state.global_step}"
        alone = trainer.accelerator.num_processes == 1
        if alone and folder.exists():  # left by an earlier attempt at this step: rewritten from scratch
            shutil.rmtree(folder)
        try:
            save(model, trial)
        except BaseException as exc:
            if alone and folder.exists() and saved_state(folder) is None:
                shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, Exception):
                raise save_failure(f"could not save checkpoint {folder}", folder.parent, exc) from exc
            raise

    trainer._save_checkpoint = save_checkpoint


def save_failure(what: str, folder: str | os.PathLike, exc: Exception) -> SaveError:
    """The :class:`SaveError` for a failed write of ``what`` into ``folder``: the error, the
    free space on a full disk, and the checkpoint a run can still resume from."""
    message = f"{what}: {type(exc).__name__}: {exc}"
    if getattr(exc, "errno", None) == errno.ENOSPC or "no space" in str(exc).lower():
        try:
            free = shutil.disk_usage(folder).free / 2**20
            message += f" (free on that disk: {free:.0f} MiB; free space or lower save_total_limit)"
        except OSError:
            pass
    last = last_checkpoint(folder)
    return SaveError(message + (f"; the last complete checkpoint is {last}, resume from it with --resume" if last else ""))


def train(trainer, resume_from_checkpoint=None, recipe=None, save=None):
    """``trainer.train(resume_from_checkpoint)``, with a checkpoint on SIGINT/SIGTERM, then ``save()``.

    The first signal stops training at the end of the current optimizer step, saves
    ``checkpoint-N`` there (model, optimizer, scheduler, RNG; PPO adds its critic and KL
    state) and raises :class:`TrainingInterrupted`; a second one stops at once. Signal
    handlers are set only in the main thread. ``trainer.start_step`` is the global step
    training started from (the checkpoint's when resuming).

    A step whose loss or gradient norm is NaN or infinite ends training there, without a
    checkpoint, and raises :class:`TrainingDiverged` naming the step; weights that are not
    finite are never saved, as a checkpoint or as the final model.

    :param recipe: the recipe the run came from; if it sets no save settings, the default
        interval is capped at ``DEFAULT_MAX_SAVE_INTERVAL`` steps.
    :param save: the final save (model, state, the run's files), run with the signal
        handlers still set: a signal during it lets it finish, then raises
        :class:`TrainingInterrupted` (``how="finished"``); a second one stops at once.
    """
    callback = _callback(trainer, cap_interval=recipe is not None and bool(checkpoint_defaults(recipe)))
    _guard_saves(trainer, callback)
    trainer.add_callback(callback)
    trainer.resumed_from = resume_from_checkpoint
    training_step, get_grad_norm = trainer.training_step, getattr(trainer, "_get_grad_norm", None)
    wrapped = ("training_step", "_get_grad_norm")
    own = {name: vars(trainer)[name] for name in wrapped if name in vars(trainer)}  # put back as they were

    def noted_training_step(*args, **kwargs):
        loss = training_step(*args, **kwargs)
        callback.note_loss(loss)
        return loss

    def noted_grad_norm(*args, **kwargs):
        norm = get_grad_norm(*args, **kwargs)
        callback.note_grad_norm(norm)
        return norm

    trainer.training_step = noted_training_step
    if get_grad_norm is not None:
        trainer._get_grad_norm = noted_grad_norm
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in EXIT_CODES:
            previous[signum] = signal.signal(signum, callback.handle)
    try:
        result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        step = trainer.state.global_step
        if callback.diverged:
            raise _diverged(trainer, *callback.diverged)
        if callback.stopped:
            folder = Path(trainer.args.output_dir) / f"checkpoint-{step}"
            raise TrainingInterrupted(callback.signum, str(folder) if is_checkpoint(folder) else None, step)
        if save is not None:
            if nonfinite_weights(trainer):
                raise _diverged(trainer, step, "the weights hold NaN or infinite values")
            callback.phase = "final save"
            save()
            if callback.signum is not None:
                raise TrainingInterrupted(callback.signum, str(trainer.args.output_dir), step, how="finished")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        trainer.remove_callback(callback)
        for name in wrapped:
            vars(trainer).pop(name, None)
        vars(trainer).update(own)
    return result
