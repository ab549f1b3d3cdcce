"""The run folder: one sub-folder per stage (and per run of a sweep), each finished by a
``done.json`` marker written last, so an interrupted pipeline resumes where it stopped.

A marker records what the step cost (wall time, peak memory, tokens) and a fingerprint
of its configuration and of everything upstream: a step whose fingerprint changed is
redone, one whose marker matches is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DONE = "done.json"
STARTED = "started.json"


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


class RunDir:
    """The pipeline's output folder and its step markers."""

    def __init__(self, root: str | Path):
        # Absolute from the start: a relative run folder is the caller's working directory's,
        # and the stages pass its paths on to code that resolves relative paths elsewhere.
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def marker(self, rel: str) -> dict | None:
        return read_json(self.path(rel, DONE))

    def is_done(self, rel: str, fp: str) -> bool:
        info = self.marker(rel)
        return bool(info) and info.get("fingerprint") == fp

    @contextmanager
    def step(self, rel: str, fp: str, keep_partial: bool = False):
        """Run a step into ``rel``: yields (folder, info dict to fill); writes the marker last.

        A folder without a valid marker is wiped first, unless ``keep_partial`` and it holds
        an interrupted attempt at the same fingerprint (training steps then keep their
        checkpoints and resume from the last one).
        """
        folder = self.path(rel)
        started = read_json(folder / STARTED, {}) or {}
        # Partial work is kept only for an interrupted run of this very configuration.
        if folder.exists() and not (keep_partial and started.get("fingerprint") == fp and not (folder / DONE).exists()):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / STARTED, {"fingerprint": fp, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        info: dict = {}
        with CostMeter() as meter:
            yield folder, info
        write_json(folder / DONE, {"fingerprint": fp, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   "finished_at": time.time(), **meter.as_dict(), **info})

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
