"""Checkpoints on disk: which ``checkpoint-N`` folders of a run are complete and resumable.

A checkpoint is the Trainer's own ``checkpoint-N`` folder. It counts as complete once its
``trainer_state.json`` parses: the Trainer writes that file after the model, optimizer,
scheduler and RNG state, so a folder cut short by SIGKILL or a full disk never counts.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

TRAINER_STATE = "trainer_state.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What a finished or started run leaves in its output folder (a model, its state, our reports).
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
           "adapter_model.safetensors", "adapter_model.bin")


def checkpoint_step(path: str | os.PathLike) -> int | None:
    match = CHECKPOINT.match(Path(path).name)
    return int(match.group(1)) if match else None


def saved_state(path: Path) -> dict | None:
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "global_step" in state else None


def has_weights(path: Path) -> bool:
    return any((path / name).exists() for name in WEIGHTS)


def has_rng_state(path: Path) -> bool:
    # Written with every resumable checkpoint (one file per process), never with a final model.
    return any(path.glob("rng_state*.pth"))


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A complete, resumable Trainer checkpoint: weights, RNG state and a readable ``trainer_state.json``."""
    path = Path(path)
    return path.is_dir() and has_weights(path) and has_rng_state(path) and saved_state(path) is not None


def checkpoint_dirs(folder: str | os.PathLike) -> list[Path]:
    """Every ``checkpoint-N`` folder in ``folder``, complete or not, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None), key=checkpoint_step)


def complete_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The complete ``checkpoint-N`` folders in ``folder``, oldest first."""
    return [p for p in checkpoint_dirs(folder) if is_checkpoint(p)]


def last_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest complete checkpoint in ``folder`` (incomplete ones are skipped), or None."""
    found = complete_checkpoints(folder)
    return str(found[-1]) if found else None
