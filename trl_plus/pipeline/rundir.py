"""The run folder as the pipeline holds it while it runs: its path checked before anything
is written, claimed by one pipeline at a time, and each step run into its sub-folder with
its ``started.json`` first and its ``done.json`` marker last (what the step cost, and the
settings it was made from).

Where things are in the folder, and how they are read back, is ``layout``'s.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .layout import (DONE, LOCK, PLAN, POLICY_DIRS, RELATIVE_MARGIN, RUN_ENTRIES, STAGE_DIRS, STARTED, SUMMARY,
                     read_json, write_json)


def _rss_bytes() -> int:
    """Resident memory of this process. Forked helpers (tokenizers, data loaders) share its
    pages, so adding their RSS would count the same memory twice."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except Exception:  # psutil missing or the platform refuses: fall back to the lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class CostMeter:
    """Wall time and peak resident memory of a block of work (RSS sampled every 0.2 s)."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak = 0
        self.started = self.ended = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> CostMeter:
        self.started = time.time()
        self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.ended = time.time()

    @property
    def wall_s(self) -> float:
        return (self.ended or time.time()) - self.started

    def as_dict(self) -> dict:
        return {"wall_time_s": round(self.wall_s, 2), "peak_rss_mb": round(self.peak / 2**20, 1)}


def _short(path: Path | str, keep: int = 60) -> str:
    text = str(path)
    return text if len(text) <= keep else f"{text[:keep // 2]}...{text[-keep // 2:]}"


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError):
        return default
    return value if isinstance(value, int) and value > 0 else default


def _existing(path: Path) -> Path:
    """The deepest part of ``path`` that exists (a file in the way included)."""
    for candidate in (path, *path.parents):
        try:
            os.stat(candidate)
            return candidate
        except OSError:  # missing, below a file, or too long a name: look higher up
            continue
    return Path(path.anchor or "/")


def _write_probe(folder: Path) -> OSError | None:
    """Whether a file can be created in ``folder`` (None) or the error that says why not.
    Permission bits do not stop root, a read-only mount does: so try, rather than ask."""
    try:
        fd, name = tempfile.mkstemp(prefix=".trl-plus-write-test-", dir=folder)
    except OSError as exc:
        return exc
    os.close(fd)
    with _quiet():
        os.unlink(name)
    return None


@contextmanager
def _quiet():
    try:
        yield
    except OSError:
        pass


def check_run_path(root: str | Path, flag: str = "--out", margin: int = RELATIVE_MARGIN, write: bool = True) -> Path:
    """Check a run folder's path before anything is written: not a file, not below a file,
    within the OS's limits on a name and on a whole path (``margin`` bytes left for what a
    run writes below it) and, with ``write``, a folder this process can write in (or create).

    :raises RunFolderError: one line that names the path, the problem and the fix.
    """
    from ..errors import RunFolderError

    root = Path(os.path.abspath(Path(root).expanduser()))
    anchor = _existing(root)
    name_max = _pathconf(anchor if anchor.is_dir() else anchor.parent, "PC_NAME_MAX", 255)
    path_max = _pathconf(anchor if anchor.is_dir() else anchor.parent, "PC_PATH_MAX", 4096)
    for part in root.parts[1:]:
        if len(os.fsencode(part)) > name_max:
            raise RunFolderError(f"{flag}: the folder name {_short(part, 40)!r} is {len(os.fsencode(part))} bytes long; "
                                 f"this file system allows {name_max}: choose a shorter name")
    length = len(os.fsencode(str(root)))
    if length + margin > path_max:
        below = f", and a run writes files up to {margin} bytes below its folder" if margin else ""
        raise RunFolderError(f"{flag}: {_short(root)} is {length} bytes long{below}; this system's paths stop at "
                             f"{path_max} bytes: choose a shorter path")
    if not anchor.is_dir():
        if anchor == root:
            fix = "choose a folder (a missing one is created)" if write else "give the run folder"
            raise RunFolderError(f"{flag}: {root} is a file, not a folder: {fix}")
        raise RunFolderError(f"{flag}: {root} is below {anchor}, which is a file, not a folder: choose another path")
    if anchor != root and os.path.lexists(root):
        raise RunFolderError(f"{flag}: {root} is a link to something that does not exist: remove it or choose "
                             "another path")
    if write:
        problem = _write_probe(anchor)
        if problem is not None:
            what = "write in" if anchor == root else f"create {root.relative_to(anchor).parts[0]}/ in"
            raise RunFolderError(f"{flag}: cannot {what} {anchor} ({problem.strerror or problem}): choose a folder "
                                 "you can write to")
    return root


def run_folder_error(exc: OSError, root: Path):
    """An OSError met while writing under the run folder ``root``, as the error the CLI
    reports in one line (a full disk: a ``SaveError``, a run failure; anything else, a
    ``RunFolderError``), or None when it is about a file elsewhere."""
    from ..errors import RunFolderError, SaveError

    name = getattr(exc, "filename", None)
    if not name:
        return None
    try:
        Path(os.path.abspath(name)).relative_to(root)
    except ValueError:
        return None
    what = f"could not write {name} ({exc.strerror or exc})"
    kept = "; every finished stage is kept, and re-running the same command resumes the run"
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return SaveError(f"{what}: free some space{kept}")
    return RunFolderError(f"{what}: make the run folder writable or choose another one{kept}")


class RunDir:
    """The pipeline's output folder and its step markers."""

    def __init__(self, root: str | Path, flag: str = "--out"):
        # Absolute from the start: a relative run folder is the caller's working directory's,
        # and the stages pass its paths on to code that resolves relative paths elsewhere.
        from ..errors import RunFolderError

        self.root = check_run_path(root, flag)
        self.flag = flag
        self.created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f"{flag}: cannot create {self.root} ({exc.strerror or exc}): choose another folder") from None
        # settings of the steps about to run (recorded in their markers): set by the pipeline's skip()
        self.settings: dict[str, dict] = {}
        self._lock: tuple[Path, int] | None = None
        self.took_over: dict | None = None

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def marker(self, rel: str) -> dict | None:
        return read_json(self.path(rel, DONE))

    def is_done(self, rel: str, fp: str) -> bool:
        info = self.marker(rel)
        return bool(info) and info.get("fingerprint") == fp

    # -- whose folder it is ----------------------------------------------------------------

    def is_run_folder(self) -> bool:
        """Whether the folder was written by the pipeline (a plan, a summary, or a stage marker)."""
        if self.path(PLAN).exists() or self.path(SUMMARY).exists():
            return True
        for stage in STAGE_DIRS:
            for sub in (self.path(stage), *(self.path(stage).glob("*") if stage in POLICY_DIRS + ("eval",) else ())):
                if (sub / DONE).exists() or (sub / STARTED).exists():
                    return True
        return False

    def check_ours(self, recipe_source: str | Path | None = None) -> None:
        """Refuse a folder that is not a run folder of ours and holds what a run would write
        (a ``recipe.yaml``, an ``sft/`` folder...): the pipeline overwrites or wipes those."""
        from ..errors import RunFolderError

        for parent in self.root.parents:
            if (parent / PLAN).exists() or (parent / SUMMARY).exists():
                raise RunFolderError(f"{self.flag}: {self.root} is inside the run folder {parent}; choose a folder "
                                     f"outside it (or {parent} itself, to continue that run)")
        if self.is_run_folder():
            return
        clash = [name + ("/" if self.path(name).is_dir() else "") for name in RUN_ENTRIES if os.path.lexists(self.path(name))]
        if not clash:
            return
        own = ""
        if recipe_source is not None and _same_file(self.path("recipe.yaml"), recipe_source):
            own = " (recipe.yaml is the recipe being run: its copy would replace it)"
        raise RunFolderError(f"{self.flag}: {self.root} is not a run folder of trl-plus but holds {', '.join(clash)}, "
                             f"which a run writes{own}; choose a new or empty folder, e.g. {self.flag} "
                             f"{self.root / 'run'}")

    def claim(self) -> None:
        """Hold the folder for this process's life (``compare.lock``, under ``fcntl.flock``):
        a folder that a live run holds is refused, naming it; a lock file left by a run that
        crashed is taken over (the kernel releases a dead process's lock, so no process id
        is trusted)."""
        from ..run_folder import lock_file

        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        fd, previous = lock_file(self.path(LOCK), info, flag=self.flag)
        self._lock = (self.path(LOCK), fd)
        self.took_over = previous or None  # a crashed run's lock, taken over

    def release(self) -> None:
        if self._lock is not None:
            lock, fd = self._lock
            with _quiet():
                os.unlink(lock)
            with _quiet():
                os.close(fd)
            self._lock = None

    @contextmanager
    def step(self, rel: str, fp: str, keep_partial: bool = False):
        """Run a step into ``rel``: yields (folder, info dict to fill); writes the marker last.

        A folder without a valid marker is wiped first, unless ``keep_partial`` and it holds
        an interrupted attempt at the same fingerprint (training steps then keep their
        checkpoints and resume from the last one). The marker records the settings the step
        was made from (``self.settings[rel]``, set when the pipeline decided to run it).
        """
        folder = self.path(rel)
        started = read_json(folder / STARTED, {}) or {}
        # Partial work is kept only for an interrupted run of this very configuration.
        if folder.exists() and not (keep_partial and started.get("fingerprint") == fp and not (folder / DONE).exists()):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        made_from = self.settings.get(rel) or {}
        write_json(folder / STARTED, {"fingerprint": fp, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), **made_from})
        info: dict = {}
        with CostMeter() as meter:
            yield folder, info
        write_json(folder / DONE, {"fingerprint": fp, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   "finished_at": time.time(), **meter.as_dict(), **made_from, **info})

    def costs(self) -> list[dict]:
        """Every marker under the run folder, as rows {step, wall_time_s, peak_rss_mb, tokens}."""
        rows = []
        for marker in sorted(self.root.rglob(DONE)):
            info = read_json(marker, {})
            rel = str(marker.parent.relative_to(self.root))
            if rel == ".":
                continue
            rows.append({"step": rel, **{k: info.get(k) for k in ("wall_time_s", "peak_rss_mb", "tokens")}})
        return rows


def _same_file(a: Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, TypeError, ValueError):
        return False

