"""The lock file that holds an output folder for a run's life (``fcntl.flock``).

A second run into the same folder is refused naming the first one's process; a lock left
by a run that crashed is taken over with a message (the kernel releases a dead process's
``flock``, so a stale lock is told from a live one without trusting process ids).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import RunFolderError

log = logging.getLogger("trl_plus")

LOCK = ".trl-plus.lock"  # in the output folder while a run holds it: {"pid", "host", "started", ...}


class HeldLock:
    """A folder this process holds: its lock file, open, and the folders made for it."""

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


def in_use_error(folder: Path, info: dict, flag: str = "--output-dir") -> RunFolderError:
    return RunFolderError(
        f"{flag}: {folder} is in use by another run ({_describe(info)}); wait for it to finish, stop it, "
        f"or choose another {flag}"
    )


def live_holder(lock: Path) -> dict | None:
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


def acquire(folder: Path, info: dict) -> HeldLock:
    """Make ``folder`` (and the folders above it that are missing) and hold its lock."""
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
    return HeldLock(folder / LOCK, fd, created)


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
                raise in_use_error(folder, _holder(lock) or {"pid": "?"}, flag) from None
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
