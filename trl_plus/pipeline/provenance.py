"""What a step was made from, as its marker records it: the settings, their hash, the
upstream steps' fingerprints and the identities of the local files it read; and, when a
re-run finds a marker that does not match, which of these changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from .layout import fingerprint

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
            with suppress(OSError):
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

