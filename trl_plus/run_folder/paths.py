"""Whether a path can be an output folder at all, checked before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RunFolderError


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
