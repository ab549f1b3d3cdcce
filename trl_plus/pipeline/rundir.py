"""The run folder: one sub-folder per stage (and per run of a sweep), each finished by a
``done.json`` marker written last, so an interrupted pipeline resumes where it stopped.

A marker records what the step cost (wall time, peak memory, tokens) and a fingerprint
of its configuration and of everything upstream: a step whose fingerprint changed is
redone, one whose marker matches is skipped; a marker also records the settings it was
made from (``settings``, their hash ``settings_hash``, and the upstream fingerprints), so a
re-run says which key changed.

A folder can hold more than the recipe now being run asks for (runs of a beta no longer
in the sweep, a seed trained at another learning rate): ``plan.json`` records what the
current recipe names, each step with the fingerprint it asks for. Everything that reads
the folder back (the eval summary, the report) takes only what the plan names and whose
marker matches it (:class:`Plan`); the rest stays on disk and is listed as left out.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DONE = "done.json"
STARTED = "started.json"
PLAN = "plan.json"  # what the recipe now being run names (see Plan)
LOCK = "compare.lock"  # held by the pipeline run that uses the folder
# What the pipeline writes at the top of its run folder: a folder that holds one of these
# and is not a run folder of ours is refused (its files would be overwritten or wiped).
STAGE_DIRS = ("corpus", "sft", "pairs", "reward", "ppo", "ppo_gt", "dpo", "eval", "report")
RUN_ENTRIES = ("recipe.yaml", "recipe.resolved.yaml", PLAN, "pipeline.json", *STAGE_DIRS)
POLICY_DIRS = ("ppo", "ppo_gt", "dpo")
# The longest path a run writes below its folder (eval/<method>/<run>/step-N/val/eval.json,
# <method>/<run>/checkpoint-N/<file>), with room to spare: checked against the OS limit.
RELATIVE_MARGIN = 128


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def write_json(path: Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


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
        if self.path(PLAN).exists() or self.path("pipeline.json").exists():
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
            if (parent / PLAN).exists() or (parent / "pipeline.json").exists():
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


HASHED_FILE_BYTES = 64 * 2**20  # a named file up to this size is identified by its contents' hash
LISTED_FILES = 20000  # a named folder is identified by its files' names, sizes and times (up to this many)


def input_identity(path: str | Path) -> str:
    """What a local input (a data file, a model folder) holds, as a short hash: a file's
    contents (its size and time beyond ``HASHED_FILE_BYTES``), a folder's file names, sizes
    and modification times. Editing the file, or replacing the model, changes it."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        st = path.stat()
        if st.st_size <= HASHED_FILE_BYTES:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        else:
            digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]
    listed = 0
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(folder, name)
            with _quiet():
                st = full.stat()
                digest.update(f"{full.relative_to(path)}:{st.st_size}:{st.st_mtime_ns};".encode())
            listed += 1
        if listed > LISTED_FILES:
            break
    return digest.hexdigest()[:16]


def local_inputs(settings: Any, run_root: Path) -> dict[str, str]:
    """Every local file or folder that ``settings`` name by absolute path (recipe loading
    makes local paths absolute), outside the run folder (what is inside is a step's own,
    covered by the upstream fingerprints), with :func:`input_identity`. A step's
    fingerprint includes them: a re-run after the data changed redoes what read it."""
    found: dict[str, str] = {}
    run_root = Path(run_root).resolve()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if len(value) < 4096 and "\n" not in value and os.path.isabs(value) and value not in found:
                try:
                    inside = Path(value).resolve().is_relative_to(run_root)
                    if not inside and os.path.exists(value):
                        found[value] = input_identity(value)
                except (OSError, ValueError):
                    pass
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(settings)
    return dict(sorted(found.items()))


def made_from(settings: Any, upstream: dict | None = None, inputs: dict | None = None) -> dict:
    """What a step's marker records of what it was made from: its settings (addresses
    without their credentials), their hash, the upstream steps' fingerprints and the
    local input files' identities."""
    from ..redact import redact_urls

    return {"settings": redact_urls(json.loads(json.dumps(settings, default=str))),
            "settings_hash": fingerprint(settings), "upstream": dict(upstream or {}), "inputs": dict(inputs or {})}


def _flat(value: Any, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: value}


def describe_change(old: dict | None, new: dict) -> str:
    """Why a step's marker does not match what the recipe now asks: the settings keys that
    changed (old -> new), else the upstream steps that were redone."""
    if not old or "settings" not in old:
        return "made by an earlier version, which recorded no settings"
    before, after = _flat(old.get("settings")), _flat(new.get("settings"))
    keys = sorted(k for k in set(before) | set(after) if before.get(k, "<unset>") != after.get(k, "<unset>"))
    if keys:
        shown = [f"{k or 'settings'}: {before.get(k, '<unset>')!r} -> {after.get(k, '<unset>')!r}" for k in keys[:4]]
        return "settings changed: " + "; ".join(shown) + (f"; and {len(keys) - 4} more" if len(keys) > 4 else "")
    if old.get("settings_hash") != new.get("settings_hash"):
        return "settings changed in a value that is not shown (a credential in an address)"
    in_old, in_new = old.get("inputs") or {}, new.get("inputs") or {}
    if edited := sorted(k for k in in_new if k in in_old and in_old[k] != in_new[k]):
        return f"the contents of {', '.join(edited[:3])}{' and more' if len(edited) > 3 else ''} changed"
    up_old, up_new = old.get("upstream") or {}, new.get("upstream") or {}
    short = lambda names: ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    parts = []
    if redone := sorted(k for k in up_old if k in up_new and up_old[k] != up_new[k]):
        parts.append(f"{short(redone)} redone since")
    if added := sorted(k for k in up_new if k not in up_old):
        parts.append(f"now also {short(added)}")
    if gone := sorted(k for k in up_old if k not in up_new):
        parts.append(f"no longer {short(gone)}")
    return "; ".join(parts) or "made from other inputs"


class Plan:
    """``plan.json``: what the recipe now being run asks of its run folder.

    ``stages`` (the stages it names), ``runs`` (every policy run of its sweep, ``rel``),
    ``steps`` (each step's fingerprint as the recipe asks it, recorded when the pipeline
    reaches the step), ``points`` (every checkpoint to evaluate, ``id -> fingerprint``,
    recorded when the eval stage starts). A step is *current* when its marker on disk
    carries the fingerprint the plan recorded: only current steps are read back.
    """

    def __init__(self, root: Path, data: dict):
        self.root = Path(root)
        self.data = data

    @classmethod
    def read(cls, root: str | Path) -> Plan | None:
        """The folder's plan; None for a folder written before plans existed.

        :raises DataError: a ``plan.json`` that cannot be read: without it nothing says which
            runs the recipe names, and reading every run on disk would mix experiments.
        """
        from ..errors import DataError

        path = Path(root) / PLAN
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            data, why = None, str(exc)
        else:
            why = "not a plan"
        ok = (isinstance(data, dict) and isinstance(data.get("runs"), list) and isinstance(data.get("steps"), dict)
              and isinstance(data.get("points"), (dict, type(None))))
        if not ok:
            raise DataError(f"{path} is damaged ({why}): it records which runs the folder's recipe names; run the "
                            f"recipe again with `trl-plus compare RECIPE --out {Path(root)}` (finished steps are "
                            "reused) to write it anew")
        return cls(Path(root), data)

    @classmethod
    def start(cls, root: Path, recipe_hash: str, stages: list[str], runs: list[str]) -> Plan:
        plan = cls(root, {"version": 1, "recipe_hash": recipe_hash, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                          "finished": None, "stages": list(stages), "runs": list(runs), "steps": {}, "points": None})
        plan.save()
        return plan

    def save(self) -> None:
        write_json(self.root / PLAN, self.data)

    def record(self, rel: str, fp: str) -> None:
        if self.data["steps"].get(rel) != fp:
            self.data["steps"][rel] = fp
            self.save()

    def record_points(self, points: dict[str, str]) -> None:
        self.data["points"] = dict(points)
        self.save()

    def finish(self) -> None:
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.save()

    @property
    def runs(self) -> list[str]:
        return list(self.data.get("runs") or [])

    def _fp(self, rel: str) -> str | None:
        if rel.startswith("eval/") and rel[5:] in (self.data.get("points") or {}):
            return self.data["points"][rel[5:]]
        return (self.data.get("steps") or {}).get(rel)

    def current(self, rel: str) -> bool:
        """Whether ``rel`` is a step of this plan whose marker matches what the plan asks."""
        fp = self._fp(rel)
        if fp is None:
            return False
        info = read_json(self.root / rel / DONE, None)
        return isinstance(info, dict) and info.get("fingerprint") == fp

    def point_current(self, point_id: str) -> bool:
        return point_id in (self.data.get("points") or {}) and self.current(f"eval/{point_id}")

    def status(self) -> dict:
        """What the plan asks that the folder lacks, and what the folder holds that it does not ask.

        ``stages_missing``, ``not_trained`` (runs, each with ``why``), ``not_evaluated``
        (checkpoint ids, or whole runs while the eval stage has not listed them), ``left_out``
        (runs and stages on disk the recipe does not name), ``complete``.
        """
        steps = self.data.get("steps") or {}
        stages_missing = [s for s in self.data.get("stages") or [] if not self.current(s)]
        not_trained = []
        for rel in self.runs:
            if self.current(rel):
                continue
            on_disk = read_json(self.root / rel / DONE, None)
            why = ("on disk from other settings" if on_disk and rel in steps else
                   "interrupted" if (self.root / rel / STARTED).exists() else "not started")
            not_trained.append({"run": rel, "why": why})
        points = self.data.get("points")
        if points is None:
            not_evaluated = [f"{rel}/*" for rel in self.runs] if self.runs else []
        else:
            not_evaluated = [pid for pid in points if not self.current(f"eval/{pid}")]
        extra = [rel for rel in steps if rel not in self.runs and rel not in (self.data.get("stages") or [])
                 and not self.current(rel)]
        return {"complete": not (stages_missing or not_trained or not_evaluated or extra),
                "stages_missing": stages_missing + extra, "not_trained": not_trained,
                "not_evaluated": not_evaluated, "left_out": left_out(self.root, self.runs, self.data.get("stages"))}


def runs_on_disk(root: Path) -> list[str]:
    """Every policy run folder under ``root`` (trained or begun), as ``method/run``, and every
    run with evaluated checkpoints under ``eval/``."""
    found = set()
    for method in POLICY_DIRS:
        if (root / method).is_dir():
            found.update(f"{method}/{d.name}" for d in (root / method).iterdir()
                         if (d / DONE).exists() or (d / STARTED).exists())
        if (root / "eval" / method).is_dir():
            found.update(f"{method}/{d.name}" for d in (root / "eval" / method).iterdir() if any(d.glob(f"*/{DONE}")))
    return sorted(found)


def left_out(root: Path, runs: list[str], stages: list[str] | None = None) -> list[str]:
    """Runs (and stages) in the folder that the plan does not name: kept on disk, never reported."""
    planned = set(runs)
    out = [rel for rel in runs_on_disk(root) if rel not in planned]
    if stages is not None:
        out += [f"{s}/" for s in ("corpus", "reward") if s not in stages and (root / s / DONE).exists()]
    return out


def legacy_status(root: Path) -> dict:
    """What a run folder written before ``plan.json`` existed visibly lacks: runs begun and
    never finished. (Without a plan nothing says which runs its recipe named.)"""
    not_trained = [{"run": rel, "why": "interrupted"} for rel in runs_on_disk(root)
                   if (root / rel / STARTED).exists() and not (root / rel / DONE).exists()]
    return {"complete": not not_trained, "stages_missing": [], "not_trained": not_trained, "not_evaluated": [],
            "left_out": []}


def run_status(root: str | Path) -> dict:
    """The folder's :meth:`Plan.status` (or :func:`legacy_status` without a plan)."""
    plan = Plan.read(root)
    return plan.status() if plan is not None else legacy_status(Path(root))
