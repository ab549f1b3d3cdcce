"""A run's output folder: checked at start-up, claimed for the run's life.

- :func:`check_output_path` refuses, before anything is written, an output folder that
  cannot be one: a file, a path below a file, a read-only folder or file system, a path
  longer than the system allows.
- :func:`claim` checks what the folder holds (another run, files that are not a run's,
  a run of the other trainer for ``--resume``), then claims it with a lock file held
  (``fcntl.flock``) for the run's life: a second run into the same folder is refused
  naming the first one's process; a lock left by a run that crashed is taken over with a
  message (the kernel releases a dead process's ``flock``, so a stale lock is told from a
  live one without trusting process ids). Under torchrun / accelerate only the main
  process (``RANK`` 0) claims; the others only check the path.
- :func:`claims_output_dir` wraps a trainer module's ``train_from_recipe`` with
  :func:`claim`, so that Python callers and the pipeline get the same protection.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import socket
import time
from pathlib import Path

import yaml

from .errors import RunFolderError

__all__ = [
    "LOCK", "check_inputs_not_output", "check_output_path", "check_resume_kind", "checkpoint_trainer", "claim",
    "claims_output_dir", "folder_trainer", "foreign_files", "recipe_copy_name",
]

log = logging.getLogger("trl_plus")

LOCK = ".trl-plus.lock"  # in the output folder while a run holds it: {"pid", "host", "started", ...}
# What a training run writes into its output folder besides the files checkpointing.RUN_FILES
# names (which show the folder is a run of ours): the model's and tokenizer's files, TRL's
# model card, the training arguments.
MODEL_FILES = (
    "config.json", "generation_config.json", "README.md", "training_args.bin", "adapter_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
    "chat_template.json", "processor_config.json", "preprocessor_config.json", "critic",
)
SHARDS = re.compile(r"^(model|pytorch_model|adapter_model)-\d+-of-\d+\.(safetensors|bin)$")
RESOLVED_RECIPE = "recipe.resolved.yaml"  # the run's copy, where recipe.yaml is the recipe being run
_held: dict[str, "_Lock"] = {}  # folders this process holds: nested claims (the CLI, then train_from_recipe) share one


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# -- the path itself ---------------------------------------------------------------------------


def check_output_path(output_dir: str | os.PathLike, what: str = "--output-dir") -> Path:
    """Refuse a path that cannot be an output folder, writing nothing; returns it as a ``Path``.

    :raises RunFolderError: a file, a path below a file, a name or path longer than the
        system allows, a folder (or the nearest existing folder above a missing one) that
        is read-only.
    """
    path = Path(output_dir)
    absolute = Path(os.path.abspath(path))
    existing = absolute  # the path, or the nearest folder above it that exists
    while not _exists(existing) and existing.parent != existing:
        existing = existing.parent
    name_max, path_max = _limits(existing)
    longest = max(absolute.parts, key=lambda p: len(os.fsencode(p)), default="")
    if len(os.fsencode(longest)) > name_max:
        raise RunFolderError(f"{what}: a name in the path is {len(os.fsencode(longest))} bytes long "
                             f"({longest[:24]}...); this system allows {name_max}: choose a shorter {what}")
    if len(os.fsencode(str(absolute))) >= path_max:
        raise RunFolderError(f"{what}: the path is {len(os.fsencode(str(absolute)))} bytes long; this system allows "
                             f"{path_max - 1}: choose a shorter {what}")
    if existing == absolute and not absolute.is_dir():
        raise RunFolderError(f"{what}: {path} is a file, not a folder: choose another {what} (or move the file)")
    if existing != absolute:
        below = absolute
        while below.parent != existing:
            below = below.parent
        if below.is_symlink():  # the first missing part is a link to nowhere
            raise RunFolderError(f"{what}: {below} is a broken link (to {os.readlink(below)}): "
                                 f"fix it or choose another {what}")
        if not existing.is_dir():
            raise RunFolderError(f"{what}: cannot create {path}: {existing} is a file, not a folder: "
                                 f"choose another {what}")
    if not _writable(existing):
        where = f"{path} is read-only" if existing == absolute else f"cannot create {path}: {existing} is read-only"
        raise RunFolderError(f"{what}: {where} ({_why_read_only(existing)}): choose another {what} "
                             f"or make it writable")
    return path


def _exists(path: Path) -> bool:
    try:
        return os.path.exists(path)
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def _limits(existing: Path) -> tuple[int, int]:
    try:
        return os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 255, 4096


def _writable(folder: Path) -> bool:
    if _read_only_mount(folder):
        return False
    return os.access(folder, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _why_read_only(folder: Path) -> str:
    return "a read-only file system" if _read_only_mount(folder) else "no write permission"


# -- what the folder holds -----------------------------------------------------------------------


def foreign_files(folder: str | os.PathLike, keep: tuple[Path, ...] = ()) -> list[str]:
    """Files in ``folder`` that a run would overwrite (model, tokenizer, model card, the
    recipe's copy, ...), apart from those in ``keep`` (the recipe being run)."""
    from .checkpointing import RUN_FILES

    folder = Path(folder)
    if not folder.is_dir():
        return []
    kept = {_same_file_key(p) for p in keep}
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name in MODEL_FILES or name in RUN_FILES or SHARDS.match(name) or name == RESOLVED_RECIPE:
            if _same_file_key(entry) in kept:
                continue
            found.append(name + ("/" if entry.is_dir() else ""))
    return found


def _same_file_key(path: Path):
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return str(path)


def recipe_copy_name(recipe, output_dir: str | os.PathLike) -> str | None:
    """Where the run's copy of its recipe goes: ``recipe.yaml``, or, when that file is the
    recipe being run, ``recipe.resolved.yaml`` (None: the recipe there already says it all,
    the same data whatever its comments and layout). Used by ``train`` and ``compare``."""
    target = Path(output_dir) / "recipe.yaml"
    source = getattr(recipe, "source", None)
    if source is None or not target.exists():
        return "recipe.yaml"
    try:
        same = os.path.samefile(source, target)
    except OSError:
        same = False
    if not same:
        return "recipe.yaml"
    try:
        if yaml.safe_load(target.read_text()) == yaml.safe_load(recipe.to_yaml()):
            return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    return RESOLVED_RECIPE


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
    for name, kind in (("critic", "ppo"), ("ppo_state.json", "ppo"), ("dpo_state.json", "dpo")):
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
        if kind in ("dpo", "ppo"):
            return kind, f"its {name} says trainer: {kind}"
    try:
        kind = yaml.safe_load((folder / "recipe.yaml").read_text()).get("trainer")
    except Exception:  # noqa: BLE001 - a recipe.yaml of any shape only fails to tell
        return None
    return (kind, f"its recipe.yaml says trainer: {kind}") if kind in ("dpo", "ppo") else None


def folder_trainer(folder: str | os.PathLike) -> str | None:
    """``"dpo"`` or ``"ppo"``: the trainer whose run the folder holds (None if it cannot tell)."""
    from .checkpointing import complete_checkpoints

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
    found = _checkpoint_kind(Path(checkpoint))
    return found[0] if found else None


def _checkpoint_kind(checkpoint: Path) -> tuple[str, str] | None:
    found = _files_kind(checkpoint)
    if found is None:
        found = _recorded_kind(checkpoint.parent)
        if found:
            found = (found[0], found[1].replace("its ", f"{checkpoint.parent.name}'s ", 1))
    return found


def check_resume_kind(checkpoint: str | os.PathLike, trainer: str | None, recipe_name: str = "this recipe") -> None:
    """Refuse to resume a checkpoint that another trainer saved, before anything is written."""
    if trainer not in ("dpo", "ppo"):
        return
    checkpoint = Path(checkpoint)
    found = _checkpoint_kind(checkpoint)
    if found is None or found[0] == trainer:
        return
    kind, evidence = found
    own = checkpoint.parent / "recipe.yaml"
    how = f"resume it with the recipe it was trained with ({own})" if own.exists() else \
        f"resume it with a trainer: {kind} recipe"
    raise RunFolderError(
        f"--resume: {checkpoint} is a {kind.upper()} checkpoint ({evidence}) and {recipe_name} trains "
        f"{trainer.upper()}: {how}, or train this recipe into another --output-dir; nothing was changed"
    )


# -- the claim ---------------------------------------------------------------------------------


class _Lock:
    def __init__(self, path: Path, fd: int, created: list[Path]):
        self.path, self.fd, self.created, self.depth = path, fd, created, 1

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        for folder in self.created:  # folders made for a run that wrote nothing (refused, failed): gone again
            with contextlib.suppress(OSError):
                folder.rmdir()


def _holder(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    host = info.get("host")
    where = "on this host" if host == socket.gethostname() else f"on host {host}" if host else "on an unknown host"
    parts = [f"pid {info.get('pid', '?')} {where}"]
    if info.get("started"):
        parts.append(f"started {info['started']}")
    if info.get("recipe"):
        parts.append(f"recipe {info['recipe']}")
    return ", ".join(parts)


def _in_use(folder: Path, info: dict, flag: str = "--output-dir") -> RunFolderError:
    return RunFolderError(
        f"{flag}: {folder} is in use by another run ({_describe(info)}); wait for it to finish, stop it, "
        f"or choose another {flag}"
    )


def _peek(lock: Path) -> dict | None:
    """The holder of ``lock`` if a live process holds it (read only: nothing is written)."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(lock) or {"pid": "?"}
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def _acquire(folder: Path, info: dict) -> _Lock:
    import fcntl

    created = []
    for parent in reversed([folder, *folder.parents]):
        if not parent.exists():
            try:
                parent.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunFolderError(f"--output-dir: cannot create {parent}: {exc.strerror}; choose another "
                                     "--output-dir") from None
            created.append(parent)
    created.reverse()
    fd, previous = lock_file(folder / LOCK, info)
    if previous:
        log.warning("trl-plus: taking over %s: the run that held it (%s) is no longer running "
                    "(it crashed or was killed)", folder, _describe(previous))
    return _Lock(folder / LOCK, fd, created)


def lock_file(lock: Path, info: dict, flag: str = "--output-dir") -> tuple[int, dict]:
    """Hold ``lock`` (``fcntl.flock``, exclusive) for this process's life and write ``info``
    into it; returns the open descriptor and what a previous holder had written (a run that
    crashed: the kernel released its lock, so no process id has to be trusted), or ``{}``.
    A folder a live process holds is refused naming it; a lock written on another host
    (a network file system, where only that host can tell) is refused too."""
    import fcntl

    folder = lock.parent
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunFolderError(f"{flag}: cannot write into {folder}: {exc.strerror}; choose another "
                                 f"{flag}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                time.sleep(0.05)  # the holder may be writing its details
                raise _in_use(folder, _holder(lock) or {"pid": "?"}, flag) from None
            raise RunFolderError(f"{flag}: cannot lock {lock}: {exc.strerror}") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its holder removed it as we opened it: claim the new one
            os.close(fd)
            continue
        previous = _holder(lock)
        if previous and previous.get("host") not in (None, socket.gethostname()):
            os.close(fd)
            raise RunFolderError(
                f"{flag}: {folder} is claimed by a run on another host ({_describe(previous)}); if that "
                f"run is no longer running, delete {lock}, or choose another {flag}"
            )
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info, indent=2).encode())
        return fd, previous
    raise RunFolderError(f"{flag}: could not claim {folder}: its lock file keeps changing")


@contextlib.contextmanager
def claim(output_dir: str | os.PathLike, trainer: str | None = None, resume=None, overwrite: bool = False,
          recipe=None):
    """Check ``output_dir`` and hold it for the run; yields the checkpoint to resume from (or None).

    In order, nothing written until the last: the path (:func:`check_output_path`); a live
    claim by another run (refused, naming it); a run already there, files that are not a
    run's, the trainer of the checkpoint to resume (``checkpointing.prepare_output_dir``);
    then the lock, and the same checks again under it. On leaving, the lock is removed; on
    an error before a resumed run saved anything new, the small files the run rewrote
    (``filter_report.json``, ...) are put back as they were.
    """
    from . import checkpointing

    folder = check_output_path(output_dir)
    key = os.path.abspath(folder)
    keep = _inputs_inside(recipe, folder)
    check_inputs_not_output(recipe, folder)
    if key in _held:  # the CLI claimed it, train_from_recipe claims again: one lock
        _held[key].depth += 1
        try:
            yield checkpointing.prepare_output_dir(folder, resume, overwrite, trainer=trainer, keep=keep, clean=False,
                                                   recipe_name=_recipe_name(recipe))
        finally:
            _held[key].depth -= 1
        return
    if not _is_main_process():  # rank 0 alone claims, checks the contents and deletes
        yield checkpointing.prepare_output_dir(folder, resume, overwrite, trainer=trainer, keep=keep, clean=False,
                                               recipe_name=_recipe_name(recipe))
        return
    holder = _peek(folder / LOCK)
    if holder is not None:
        raise _in_use(folder, holder)
    checks = dict(trainer=trainer, keep=keep, recipe_name=_recipe_name(recipe))
    checkpointing.prepare_output_dir(folder, resume, overwrite, clean=False, **checks)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "trainer": trainer, "recipe": str(recipe.source) if getattr(recipe, "source", None) else None}
    lock = _acquire(folder, info)
    _held[key] = lock
    try:
        try:
            resolved = checkpointing.prepare_output_dir(folder, resume, overwrite, **checks)
        except BaseException:
            lock.release()
            raise
        saved = _small_files(folder) if resolved else {}
        try:
            yield resolved
        except BaseException as exc:
            if saved and not isinstance(exc, checkpointing.TrainingInterrupted) and not _progress(folder, resolved):
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


_RESTORED = ("filter_report.json", "run_info.json", "ppo_state.json", "dpo_state.json", "README.md")


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
    from .checkpointing import checkpoint_step, last_checkpoint

    last = last_checkpoint(folder)
    return last is not None and (checkpoint_step(last) or 0) > (checkpoint_step(resumed) or 0)


def _restore(folder: Path, saved: dict[str, bytes]) -> None:
    for name, data in saved.items():
        with contextlib.suppress(OSError):
            path = folder / name
            if not path.is_file() or path.read_bytes() != data:
                path.write_bytes(data)


def claims_output_dir(trainer: str):
    """Decorate a trainer module's ``train_from_recipe(recipe, output_dir, hooks=None,
    resume_from_checkpoint=None, overwrite=False)`` so that it runs under :func:`claim`."""

    def decorate(fn):
        @functools.wraps(fn)
        def train_from_recipe(recipe, output_dir: str, hooks=None, resume_from_checkpoint=None, overwrite=False):
            with claim(output_dir, trainer, resume_from_checkpoint, overwrite, recipe) as resume:
                return fn(recipe, output_dir, hooks=hooks, resume_from_checkpoint=resume, overwrite=overwrite)

        return train_from_recipe

    return decorate
