"""Runs that cannot be lost: output-folder checks, default checkpointing, resume, signals.

- :func:`prepare_output_dir` refuses a folder that holds another run (before anything is
  written into it), and resolves ``resume`` to a complete checkpoint or a one-line error.
- :func:`checkpoint_defaults` keeps a checkpoint along every recipe that says nothing
  about saving.
- :func:`train` runs ``trainer.train()`` so that SIGINT/SIGTERM save a resumable
  ``checkpoint-N`` at the next step boundary (then :class:`TrainingInterrupted`), and a
  failed save leaves no half-written checkpoint behind (then :class:`SaveError`).

A checkpoint is the Trainer's own ``checkpoint-N`` folder. It counts as complete once its
``trainer_state.json`` parses: the Trainer writes that file after the model, optimizer,
scheduler and RNG state, so a folder cut short by SIGKILL or a full disk never counts.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import threading
from pathlib import Path

from .errors import RunFolderError, SaveError

__all__ = [
    "TrainingInterrupted", "checkpoint_defaults", "complete_checkpoints", "is_checkpoint", "last_checkpoint",
    "prepare_output_dir", "run_files", "save_failure", "train",
]

log = logging.getLogger("trl_plus")

TRAINER_STATE = "trainer_state.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What a finished or started run leaves in its output folder (a model, its state, our reports).
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
           "adapter_model.safetensors", "adapter_model.bin")
RUN_FILES = (TRAINER_STATE, "run_info.json", "recipe.yaml", "filter_report.json", "ppo_state.json", *WEIGHTS,
             "done.json")
# Used where a recipe sets none of these: a checkpoint every 10% of the run, at most
# DEFAULT_MAX_SAVE_INTERVAL steps apart, the last two kept.
SAVE_KEYS = ("save_strategy", "save_steps", "save_total_limit")
DEFAULT_SAVE = {"save_strategy": "steps", "save_steps": 0.1, "save_total_limit": 2}
DEFAULT_MAX_SAVE_INTERVAL = 500
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving ``checkpoint`` (at ``step``).

    A ``KeyboardInterrupt``, so that code catching ``Exception`` lets it through, as it
    would Ctrl-C. ``exit_code`` is 130 for SIGINT and 143 for SIGTERM.
    """

    def __init__(self, signum: int, checkpoint: str | None, step: int):
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        self.signal_name = signal.Signals(signum).name
        self.exit_code = EXIT_CODES.get(signum, 130)
        super().__init__(f"{self.signal_name} at step {step}; saved checkpoint {checkpoint}")


# -- checkpoints on disk ---------------------------------------------------------------------


def checkpoint_step(path: str | os.PathLike) -> int | None:
    match = CHECKPOINT.match(Path(path).name)
    return int(match.group(1)) if match else None


def _state_of(path: Path) -> dict | None:
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "global_step" in state else None


def _has_weights(path: Path) -> bool:
    return any((path / name).exists() for name in WEIGHTS)


def _has_rng_state(path: Path) -> bool:
    # Written with every resumable checkpoint (one file per process), never with a final model.
    return any(path.glob("rng_state*.pth"))


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A complete, resumable Trainer checkpoint: weights, RNG state and a readable ``trainer_state.json``."""
    path = Path(path)
    return path.is_dir() and _has_weights(path) and _has_rng_state(path) and _state_of(path) is not None


def _checkpoint_dirs(folder: str | os.PathLike) -> list[Path]:
    """Every ``checkpoint-N`` folder in ``folder``, complete or not, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None), key=checkpoint_step)


def complete_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The complete ``checkpoint-N`` folders in ``folder``, oldest first."""
    return [p for p in _checkpoint_dirs(folder) if is_checkpoint(p)]


def last_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest complete checkpoint in ``folder`` (incomplete ones are skipped), or None."""
    found = complete_checkpoints(folder)
    return str(found[-1]) if found else None


def run_files(folder: str | os.PathLike) -> list[str]:
    """What in ``folder`` shows that a run already used it (empty for a fresh folder)."""
    folder = Path(folder)
    return [p.name + "/" for p in _checkpoint_dirs(folder)] + [name for name in RUN_FILES if (folder / name).exists()]


# -- before a run ----------------------------------------------------------------------------


def _is_main_launch_process() -> bool:
    # Under torchrun/accelerate every rank runs this; rank 0 alone decides and deletes, so a
    # slower rank cannot mistake what rank 0 has started writing for another run.
    return int(os.environ.get("RANK", "0")) == 0


def prepare_output_dir(output_dir: str | os.PathLike, resume=None, overwrite: bool = False) -> str | None:
    """Check ``output_dir`` before anything is written into it; returns the checkpoint to resume from.

    :param resume: None (a new run), True (the last complete checkpoint in ``output_dir``)
        or a checkpoint folder.
    :param overwrite: replace a run already in ``output_dir``: its ``checkpoint-*`` folders
        are deleted (they would otherwise be taken for this run's), its other files are
        replaced as the new run writes them.
    :raises RunFolderError: the folder holds another run (and neither ``resume`` nor
        ``overwrite`` is given), or there is no checkpoint to resume from.
    """
    output_dir = Path(output_dir)
    if resume and overwrite:
        raise RunFolderError("give --resume or --overwrite, not both")
    if resume is True:
        found = last_checkpoint(output_dir)
        if found is None:
            raise RunFolderError(f"--resume: no checkpoint to resume from in {output_dir}{_why_none(output_dir)}; "
                                 "train without --resume to start the run")
        return found
    if resume:
        return str(_checked_checkpoint(Path(resume)))
    used = run_files(output_dir)
    if used and not overwrite and _is_main_launch_process():
        shown = ", ".join(used[:5]) + (", ..." if len(used) > 5 else "")
        raise RunFolderError(
            f"--output-dir: {output_dir} already holds a run ({shown}); continue it with --resume, replace it "
            "with --overwrite (in Python: resume_from_checkpoint=True or overwrite=True), or choose another folder"
        )
    if used and _is_main_launch_process():
        for old in _checkpoint_dirs(output_dir):
            shutil.rmtree(old)
    return None


def _why_none(folder: Path) -> str:
    if not folder.is_dir():
        return " (the folder does not exist)"
    partial = [p.name for p in _checkpoint_dirs(folder)]
    if partial:
        return f" (only incomplete or non-resumable ones: {', '.join(partial)})"
    return " (no checkpoint-N folder)"


def _checked_checkpoint(path: Path) -> Path:
    if not path.is_dir():
        raise RunFolderError(f"--resume: no checkpoint folder {str(path)!r} (looked in {Path.cwd()})")
    if is_checkpoint(path):
        return path
    missing = [] if _has_weights(path) else ["model weights"]
    if not _has_rng_state(path):
        missing.append("RNG state")
    if _state_of(path) is None:
        missing.append(f"readable {TRAINER_STATE}")
    inside = last_checkpoint(path)
    hint = f"; did you mean {inside}?" if inside else "; give a checkpoint-N folder, or --resume alone for the last one"
    raise RunFolderError(f"--resume: {path} is not a resumable checkpoint (no {', no '.join(missing)}){hint}")


def checkpoint_defaults(recipe) -> dict:
    """Trainer-config overrides that keep checkpoints along a run whose recipe sets no save settings."""
    section = recipe.trainer_args
    if any(key in section for key in SAVE_KEYS) or section.get("load_best_model_at_end"):
        return {}
    return dict(DEFAULT_SAVE)


# -- during a run ----------------------------------------------------------------------------


class _Checkpointing:
    """Stops at the next step boundary after a signal, with a checkpoint; caps the default interval.

    A ``TrainerCallback`` once :func:`_callback` mixes it in (importing transformers only
    when training, so that this module stays light for the CLI's early checks).
    """

    def __init__(self, trainer, cap_interval: bool):
        self.trainer = trainer
        self.cap_interval = cap_interval
        self.signum: int | None = None
        self.stopped = False

    def on_train_begin(self, args, state, control, **kwargs):
        if self.cap_interval and state.save_steps > DEFAULT_MAX_SAVE_INTERVAL:
            state.save_steps = DEFAULT_MAX_SAVE_INTERVAL
        self.trainer.start_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_process_signalled():
            control.should_save = True
            control.should_training_stop = True
            self.stopped = True
        return control

    def _any_process_signalled(self) -> bool:
        flag = self.signum is not None
        accelerator = getattr(self.trainer, "accelerator", None)
        if accelerator is None or accelerator.num_processes == 1:
            return flag
        import torch

        # Every rank must stop at the same step, or the others wait for it forever.
        return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum").item() > 0)

    def handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: stop now, without a checkpoint
            if signum == signal.SIGTERM:
                raise SystemExit(EXIT_CODES[signal.SIGTERM])
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("trl-plus: %s received: saving a checkpoint at the end of this step "
                    "(send it again to stop at once, without one)", signal.Signals(signum).name)


def _callback(trainer, cap_interval: bool):
    from transformers import TrainerCallback

    return type("Checkpointing", (_Checkpointing, TrainerCallback), {})(trainer, cap_interval)


def _guard_saves(trainer) -> None:
    """Wrap the trainer's checkpoint save: a failure removes the half-written folder and
    becomes a :class:`SaveError` naming it (the previous checkpoint is left as it was)."""
    save = trainer._save_checkpoint

    def save_checkpoint(model, trial):
        folder = Path(trainer._get_output_dir(trial=trial)) / f"checkpoint-{trainer.state.global_step}"
        alone = trainer.accelerator.num_processes == 1
        if alone and folder.exists():  # left by an earlier attempt at this step: rewritten from scratch
            shutil.rmtree(folder)
        try:
            save(model, trial)
        except BaseException as exc:
            if alone and folder.exists() and _state_of(folder) is None:
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


def train(trainer, resume_from_checkpoint=None, recipe=None):
    """``trainer.train(resume_from_checkpoint)``, with a checkpoint on SIGINT/SIGTERM.

    The first signal stops training at the end of the current optimizer step, saves
    ``checkpoint-N`` there (model, optimizer, scheduler, RNG; PPO adds its critic and KL
    state) and raises :class:`TrainingInterrupted`; a second one stops at once. Signal
    handlers are set only in the main thread. ``trainer.start_step`` is the global step
    training started from (the checkpoint's when resuming).

    :param recipe: the recipe the run came from; if it sets no save settings, the default
        interval is capped at ``DEFAULT_MAX_SAVE_INTERVAL`` steps.
    """
    _guard_saves(trainer)
    callback = _callback(trainer, cap_interval=recipe is not None and bool(checkpoint_defaults(recipe)))
    trainer.add_callback(callback)
    trainer.resumed_from = resume_from_checkpoint
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in EXIT_CODES:
            previous[signum] = signal.signal(signum, callback.handle)
    try:
        result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        trainer.remove_callback(callback)
    if callback.stopped:
        step = trainer.state.global_step
        folder = Path(trainer.args.output_dir) / f"checkpoint-{step}"
        raise TrainingInterrupted(callback.signum, str(folder) if is_checkpoint(folder) else None, step)
    return result

