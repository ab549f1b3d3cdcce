"""A run's output folder: checked at start-up, claimed for the run's life.

- :func:`check_output_path` refuses, before anything is written, an output folder that
  cannot be one: a file, a path below a file, a read-only folder or file system, a path
  longer than the system allows (:mod:`.paths`).
- :func:`claim` checks what the folder holds (another run, files that are not a run's,
  a run of the other trainer for ``--resume``: :func:`prepare_output_dir`), then claims it
  with a lock file held (``fcntl.flock``) for the run's life: a second run into the same
  folder is refused naming the first one's process; a lock left by a run that crashed is
  taken over with a message (the kernel releases a dead process's ``flock``, so a stale
  lock is told from a live one without trusting process ids). Under torchrun / accelerate
  only the main process (``RANK`` 0) claims; the others only check the path
  (:mod:`.claims`, :mod:`.lock`). ``trl_plus.trainers.from_recipe.train_from_recipe``
  runs under it, so that Python callers and the pipeline get the same protection.

Underneath: :mod:`.checkpoints` (which ``checkpoint-N`` folders are complete),
:mod:`.contents` (the files a run leaves or would overwrite, the recipe's copy),
:mod:`.trainer_of` (which trainer wrote a run or checkpoint), :mod:`.stops` (how a
run stops early) and :mod:`.compute` (the compute record, ``compute.json``, of each
checkpoint and of the final folder). Training itself (signals, divergence, saves) is ``trl_plus.checkpointing``,
which imports this package; nothing here imports it.
"""

from __future__ import annotations

from .checkpoints import complete_checkpoints, is_checkpoint, last_checkpoint
from .claims import check_inputs_not_output, claim, prepare_output_dir
from .contents import MODEL_FILES, RESOLVED_RECIPE, RUN_FILES, foreign_files, recipe_copy_name, run_files
from .lock import LOCK, lock_file
from .paths import check_output_path
from .stops import TrainingDiverged, TrainingInterrupted
from .trainer_of import check_resume_kind, checkpoint_trainer, folder_trainer

__all__ = [
    "LOCK", "MODEL_FILES", "RESOLVED_RECIPE", "RUN_FILES", "TrainingDiverged", "TrainingInterrupted",
    "check_inputs_not_output", "check_output_path", "check_resume_kind", "checkpoint_trainer", "claim",
    "complete_checkpoints", "folder_trainer", "foreign_files", "is_checkpoint", "last_checkpoint", "lock_file",
    "prepare_output_dir", "recipe_copy_name", "run_files",
]
