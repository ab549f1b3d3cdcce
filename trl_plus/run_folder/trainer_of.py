"""Which trainer wrote a run or a checkpoint, from what it recorded (``run_info.json``, the
lock, the recipe's copy) or from its files and log; and the refusal to resume another
trainer's checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from ..errors import RunFolderError
from .checkpoints import complete_checkpoints
from .lock import LOCK


# The trainers whose runs a folder can be told apart by, and the file each leaves in every checkpoint.
KINDS = ("dpo", "ppo", "rloo", "grpo", "online_dpo")
# (online DPO's before DPO's: an online DPO run's log reads like a DPO run's)
_STATE_FILES = (("critic", "ppo"), ("ppo_state.json", "ppo"), ("online_dpo_state.json", "online_dpo"),
                ("dpo_state.json", "dpo"), ("rloo_state.json", "rloo"), ("grpo_state.json", "grpo"))


def _log_kind(path: Path) -> tuple[str, str] | None:
    try:
        history = json.loads((path / "trainer_state.json").read_text()).get("log_history") or []
    except (OSError, ValueError, AttributeError):
        return None
    keys = {key for entry in history if isinstance(entry, dict) for key in entry}
    if "kl_coef" in keys:
        return "ppo", "its log has kl_coef"
    for key in ("beta", "rewards/chosen", "rewards/margins"):
        if key in keys:
            return "dpo", f"its log has {key}"
    return None


def _files_kind(path: Path) -> tuple[str, str] | None:
    """The trainer that wrote ``path`` (a run or a checkpoint), from its files, and why."""
    for name, kind in _STATE_FILES:
        if (path / name).exists():
            return kind, f"it has {name}{'/' if name == 'critic' else ''}"
    return _log_kind(path)


def _recorded_kind(folder: Path) -> tuple[str, str] | None:
    """The trainer the folder's run recorded: ``run_info.json``, a lock, the recipe's copy."""
    for name in ("run_info.json", LOCK):
        try:
            kind = json.loads((folder / name).read_text()).get("trainer")
        except (OSError, ValueError, AttributeError):
            continue
        if kind in KINDS:
            return kind, f"its {name} says trainer: {kind}"
    try:
        kind = yaml.safe_load((folder / "recipe.yaml").read_text()).get("trainer")
    except Exception:  # noqa: BLE001 - a recipe.yaml of any shape only fails to tell
        return None
    return (kind, f"its recipe.yaml says trainer: {kind}") if kind in KINDS else None


def folder_trainer(folder: str | os.PathLike) -> str | None:
    """``"dpo"``, ``"ppo"``, ``"rloo"``, ``"grpo"`` or ``"online_dpo"``: the trainer whose run the folder
    holds (None if it cannot tell)."""
    folder = Path(folder)
    found = _recorded_kind(folder) or _files_kind(folder)
    if found is None:
        for checkpoint in reversed(complete_checkpoints(folder)):
            found = _files_kind(checkpoint)
            if found:
                break
    return found[0] if found else None


def checkpoint_trainer(checkpoint: str | os.PathLike) -> str | None:
    """The trainer that saved a ``checkpoint-N`` folder (its files, its log, then its run's)."""
    found = checkpoint_kind(Path(checkpoint))
    return found[0] if found else None


def checkpoint_kind(checkpoint: Path) -> tuple[str, str] | None:
    found = _files_kind(checkpoint)
    if found is None:
        found = _recorded_kind(checkpoint.parent)
        if found:
            found = (found[0], found[1].replace("its ", f"{checkpoint.parent.name}'s ", 1))
    return found


def check_resume_kind(checkpoint: str | os.PathLike, trainer: str | None, recipe_name: str = "this recipe") -> None:
    """Refuse to resume a checkpoint that another trainer saved, before anything is written."""
    if trainer not in KINDS:
        return
    checkpoint = Path(checkpoint)
    found = checkpoint_kind(checkpoint)
    if found is None or found[0] == trainer:
        return
    kind, evidence = found
    own = checkpoint.parent / "recipe.yaml"
    how = f"resume it with the recipe it was trained with ({own})" if own.exists() else \
        f"resume it with a trainer: {kind} recipe"
    raise RunFolderError(
        f"--resume: {checkpoint} is {'an' if kind[0] in 'aeiou' else 'a'} {kind.upper()} checkpoint ({evidence}) and {recipe_name} trains "
        f"{trainer.upper()}: {how}, or train this recipe into another --output-dir; nothing was changed"
    )
