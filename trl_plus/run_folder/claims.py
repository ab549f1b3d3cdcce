"""Starting a run in an output folder: what it holds is checked (another run, files that are
not a run's, the checkpoint to resume and its trainer), then the folder is claimed for
the run's life, and put back as it was when a resumed run fails before saving anything."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from pathlib import Path

from ..errors import RunFolderError
from .checkpoints import (
    TRAINER_STATE, checkpoint_dirs, checkpoint_step, has_rng_state, has_weights, is_checkpoint, last_checkpoint,
    saved_state,
)
from .contents import foreign_files, run_files
from .lock import LOCK, HeldLock, acquire, in_use_error, live_holder
from .paths import check_output_path
from .stops import TrainingInterrupted
from .trainer_of import check_resume_kind

_held: dict[str, "HeldLock"] = {}  # folders this process holds: nested claims (the CLI, then train_from_recipe) share one


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def prepare_output_dir(output_dir: str | os.PathLike, resume=None, overwrite: bool = False, *,
                       trainer: str | None = None, keep=(), clean: bool = True,
                       recipe_name: str = "this recipe") -> str | None:
    """Check ``output_dir`` before anything is written into it; returns the checkpoint to resume from.

    (:func:`claim` calls this, before and again under the folder's lock.)

    :param resume: None (a new run), True (the last complete checkpoint in ``output_dir``)
        or a checkpoint folder.
    :param overwrite: replace a run already in ``output_dir``: its ``checkpoint-*`` folders
        and every file a run writes (model, tokenizer, state, reports, a PPO critic) are
        deleted before this run starts, so that nothing of it mixes with the new run; files
        a run would overwrite that are not a run's go too. Other files stay.
    :param trainer: the recipe's trainer kind: a checkpoint to resume that another trainer
        saved is refused.
    :param keep: files in the folder the run reads (the recipe being run): never counted
        as files it would overwrite.
    :param clean: delete the old checkpoints when overwriting (False: check only).
    :raises RunFolderError: the folder holds another run or files a run would overwrite
        (and neither ``resume`` nor ``overwrite`` is given), there is no checkpoint to
        resume from, or the checkpoint is another trainer's.
    """
    output_dir = Path(output_dir)
    if resume and overwrite:
        raise RunFolderError("give --resume or --overwrite, not both")
    if resume is True:
        found = last_checkpoint(output_dir)
        if found is None:
            raise RunFolderError(f"--resume: no checkpoint to resume from in {output_dir}{_why_none(output_dir)}; "
                                 "train without --resume to start the run")
        check_resume_kind(found, trainer, recipe_name)
        return found
    if resume:
        found = str(_checked_checkpoint(Path(resume)))
        check_resume_kind(found, trainer, recipe_name)
        if is_main_process() and not _same_folder(Path(found).parent, output_dir):
            # continued into another folder: that one is checked as for a new run
            where = f"; to continue {found} elsewhere, give an empty --output-dir (or its own, {Path(found).parent})"
            _refuse_used(output_dir, keep, where)
        return found
    if not is_main_process():
        return None
    if not overwrite:
        _refuse_used(output_dir, keep)
    if overwrite and clean:  # what is left of the run replaced would mix with this one's (a critic/ by a DPO model)
        for old in checkpoint_dirs(output_dir):
            shutil.rmtree(old)
        for name in foreign_files(output_dir, keep):
            path = output_dir / name.rstrip("/")
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return None


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _refuse_used(output_dir: Path, keep=(), hint: str = "") -> None:
    """Refuse a folder that holds a run, or files a run would overwrite that are not a run's."""
    used = run_files(output_dir)
    if used:
        shown = ", ".join(used[:5]) + (", ..." if len(used) > 5 else "")
        raise RunFolderError(
            f"--output-dir: {output_dir} already holds a run ({shown}); " + (hint.lstrip("; ") if hint else
            "continue it with --resume, replace it with --overwrite (in Python: resume_from_checkpoint=True or "
            "overwrite=True), or choose another folder")
        )
    foreign = foreign_files(output_dir, keep)
    if foreign:
        shown = ", ".join(foreign[:6]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 6 else "")
        raise RunFolderError(
            f"--output-dir: {output_dir} holds files that training would overwrite and that are not from a "
            f"trl-plus run ({shown}); " + (hint.lstrip("; ") if hint else
            "choose another --output-dir (or move them), or replace them with --overwrite (in Python: overwrite=True)")
        )


def _why_none(folder: Path) -> str:
    if not folder.is_dir():
        return " (the folder does not exist)"
    partial = [p.name for p in checkpoint_dirs(folder)]
    if partial:
        return f" (only incomplete or non-resumable ones: {', '.join(partial)})"
    return " (no checkpoint-N folder)"


def _checked_checkpoint(path: Path) -> Path:
    if not path.is_dir():
        raise RunFolderError(f"--resume: no checkpoint folder {str(path)!r} (looked in {Path.cwd()})")
    if is_checkpoint(path):
        return path
    missing = [] if has_weights(path) else ["model weights"]
    if not has_rng_state(path):
        missing.append("RNG state")
    if saved_state(path) is None:
        missing.append(f"readable {TRAINER_STATE}")
    inside = last_checkpoint(path)
    hint = f"; did you mean {inside}?" if inside else "; give a checkpoint-N folder, or --resume alone for the last one"
    raise RunFolderError(f"--resume: {path} is not a resumable checkpoint (no {', no '.join(missing)}){hint}")


@contextlib.contextmanager
def claim(output_dir: str | os.PathLike, trainer: str | None = None, resume=None, overwrite: bool = False,
          recipe=None):
    """Check ``output_dir`` and hold it for the run; yields the checkpoint to resume from (or None).

    In order, nothing written until the last: the path (:func:`check_output_path`); a live
    claim by another run (refused, naming it); a run already there, files that are not a
    run's, the trainer of the checkpoint to resume (:func:`prepare_output_dir`);
    then the lock, and the same checks again under it. On leaving, the lock is removed; on
    an error before a resumed run saved anything new, the small files the run rewrote
    (``filter_report.json``, ...) are put back as they were.
    """
    folder = check_output_path(output_dir)
    key = os.path.abspath(folder)
    keep = _inputs_inside(recipe, folder)
    check_inputs_not_output(recipe, folder)
    if key in _held:  # the CLI claimed it, train_from_recipe claims again: one lock
        _held[key].depth += 1
        try:
            yield prepare_output_dir(folder, resume, overwrite, trainer=trainer, keep=keep, clean=False,
                                                   recipe_name=_recipe_name(recipe))
        finally:
            _held[key].depth -= 1
        return
    if not is_main_process():  # rank 0 alone claims, checks the contents and deletes
        yield prepare_output_dir(folder, resume, overwrite, trainer=trainer, keep=keep, clean=False,
                                               recipe_name=_recipe_name(recipe))
        return
    holder = live_holder(folder / LOCK)
    if holder is not None:
        raise in_use_error(folder, holder)
    checks = dict(trainer=trainer, keep=keep, recipe_name=_recipe_name(recipe))
    prepare_output_dir(folder, resume, overwrite, clean=False, **checks)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "trainer": trainer, "recipe": str(recipe.source) if getattr(recipe, "source", None) else None}
    lock = acquire(folder, info)
    _held[key] = lock
    try:
        try:
            resolved = prepare_output_dir(folder, resume, overwrite, **checks)
        except BaseException:
            lock.release()
            raise
        saved = _small_files(folder) if resolved else {}
        try:
            yield resolved
        except BaseException as exc:
            if saved and not isinstance(exc, TrainingInterrupted) and not _progress(folder, resolved):
                _restore(folder, saved)
            raise
    finally:
        _held.pop(key, None)
        lock.release()


def _recipe_name(recipe) -> str:
    source = getattr(recipe, "source", None)
    return f"the recipe {Path(source).name}" if source else "this recipe"


def _inputs_inside(recipe, folder: Path) -> tuple[Path, ...]:
    source = getattr(recipe, "source", None)
    return (Path(source),) if source else ()


def check_inputs_not_output(recipe, folder: Path) -> None:
    """Refuse an output folder that is one of the recipe's inputs (the model it trains, a
    reference, a critic, a reward model): the run would write over what it loads."""
    if recipe is None or not folder.is_dir():
        return
    for where, value in _strings(getattr(recipe, "raw", None) or {}):
        if len(value) > 1024 or "\n" in value or where.rsplit(".", 1)[-1] in _WRITTEN_KEYS:
            continue
        try:
            same = os.path.isdir(value) and os.path.samefile(value, folder)
        except (OSError, ValueError):
            same = False
        if same:
            raise RunFolderError(
                f"--output-dir: {folder} is the recipe's {where} ({value}): the run would write over what it "
                "loads; choose another --output-dir"
            )


_WRITTEN_KEYS = ("output_dir", "logging_dir", "ref_logps_cache", "cache_dir")  # folders a run writes, not reads


def _strings(node, where: str = ""):
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")


_RESTORED = ("filter_report.json", "run_info.json", "ppo_state.json", "dpo_state.json", "rloo_state.json",
             "grpo_state.json", "online_dpo_state.json", "README.md")


def _small_files(folder: Path) -> dict[str, bytes]:
    saved = {}
    for name in _RESTORED:
        path = folder / name
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_size < 16 * 2**20:
                saved[name] = path.read_bytes()
    return saved


def _progress(folder: Path, resumed: str) -> bool:
    """Whether the resumed run saved a checkpoint past the one it resumed from."""
    last = last_checkpoint(folder)
    return last is not None and (checkpoint_step(last) or 0) > (checkpoint_step(resumed) or 0)


def _restore(folder: Path, saved: dict[str, bytes]) -> None:
    for name, data in saved.items():
        with contextlib.suppress(OSError):
            path = folder / name
            if not path.is_file() or path.read_bytes() != data:
                path.write_bytes(data)
