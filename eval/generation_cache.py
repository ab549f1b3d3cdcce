"""The generations cache (``generations.jsonl``): one JSON row per sampled set, keyed by the
model, the prompt set's hash, the sampling settings and seed, so a re-run, or scoring with a
new judge, never samples again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from .generation_settings import GenerationSettings


def prompts_hash(prompts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()


# Part of every cache key: rows sampled before generation was neutralised (when a
# checkpoint's generation_config.json could still reshape the distribution) never match.
SAMPLING_RULE = "own-distribution"


def cache_key(kind: str, model_id: str, prompts_sha: str, settings: GenerationSettings, **extra) -> str:
    payload = {"kind": kind, "model": model_id, "prompts": prompts_sha, "settings": settings.to_dict(),
               "sampling": SAMPLING_RULE, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cache_lookup(cache_path: str | Path | None, key: str) -> dict | None:
    if cache_path is None or not Path(cache_path).exists():
        return None
    found = None
    with open(cache_path) as f:
        for line in f:
            if key in line:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a crash: ignore it
                    continue
                if row.get("key") == key:
                    found = row
    return found


def cache_store(cache_path: str | Path | None, row: dict) -> None:
    if cache_path is None:
        return
    path = Path(cache_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
