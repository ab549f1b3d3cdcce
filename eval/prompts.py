"""Prompt sets: a JSONL file, a ``datasets`` split, or a recipe's data, with an optional
column of reference completions. Each set carries the sha256 of its content for the
manifest and the generation cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl_plus.errors import DataError


@dataclass
class PromptSet:
    prompts: list[str]
    references: list[str] | None = None  # reference completions, one per prompt
    source: str = "<memory>"

    @property
    def sha256(self) -> str:
        payload = {"prompts": self.prompts, "references": self.references}
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.prompts)

    def head(self, n: int | None) -> PromptSet:
        if n is None or n >= len(self.prompts):
            return self
        refs = self.references[:n] if self.references is not None else None
        return PromptSet(self.prompts[:n], refs, self.source)


def _rows_from_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise DataError(f"{path}: line {i} is not JSON: {exc}") from None
    return rows


def load_prompts(
    source: Any,
    *,
    prompt_column: str = "prompt",
    reference_column: str | None = None,
    max_prompts: int | None = None,
    hooks=None,
    base_dir: str | Path | None = None,
) -> PromptSet:
    """A prompt set from a ``.jsonl`` path, a dataset spec mapping (``{path, split, name,
    data_files}``, loaded through the ``trl_plus_load_dataset`` hook), a ``datasets.Dataset``,
    a list of strings, or a :class:`PromptSet`.

    ``reference_column`` names the column of reference completions; when it is not
    given, a ``reference`` or ``completion`` column is used if present.
    """
    if isinstance(source, PromptSet):
        return source.head(max_prompts)
    if isinstance(source, Sequence) and not isinstance(source, str) and all(isinstance(s, str) for s in source):
        return PromptSet(list(source)).head(max_prompts)
    where = "eval.prompts"
    if isinstance(source, (str, Path)) and Path(str(source)).suffix in (".jsonl", ".json"):
        path = Path(source)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.exists():
            raise DataError(f"{where}: file not found: {str(source)!r}")
        rows, label = _rows_from_jsonl(path), str(path)
        columns = sorted({k for r in rows for k in r})
    else:
        from trl_plus.manager import Hooks

        if isinstance(source, (str, Path)):
            spec = {"path": str(source)}
        elif isinstance(source, Mapping):
            spec = dict(source)
        else:  # a datasets.Dataset
            spec = None
        if spec is not None:
            path = Path(spec["path"])
            if base_dir is not None and not path.is_absolute() and (Path(base_dir) / path).exists():
                spec["path"] = str(Path(base_dir) / path)
            dataset = Hooks.of(hooks).load_dataset(spec)
            label = json.dumps(spec, sort_keys=True)
        else:
            dataset, label = source, "<dataset>"
        columns = list(dataset.column_names)
        rows = None
    if prompt_column not in columns:
        raise DataError(f"{where}: {label} has no column {prompt_column!r} (columns: {', '.join(columns)})")
    if reference_column is not None and reference_column not in columns:
        raise DataError(
            f"{where}: {label} has no reference column {reference_column!r} (columns: {', '.join(columns)})"
        )
    if reference_column is None:
        reference_column = next((c for c in ("reference", "completion") if c in columns), None)
    if rows is None:
        n = len(dataset) if max_prompts is None else min(max_prompts, len(dataset))
        prompts = list(dataset[prompt_column][:n])
        refs = list(dataset[reference_column][:n]) if reference_column else None
    else:
        rows = rows[:max_prompts] if max_prompts is not None else rows
        prompts = [r.get(prompt_column) for r in rows]
        refs = [r.get(reference_column) for r in rows] if reference_column else None
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise DataError(f"{where}: row {i} of {label}: {prompt_column!r} is {p!r}, not text")
    if refs is not None:
        for i, r in enumerate(refs):
            if not isinstance(r, str):
                raise DataError(f"{where}: row {i} of {label}: {reference_column!r} is {r!r}, not text")
    if not prompts:
        raise DataError(f"{where}: {label} has no prompts")
    return PromptSet(prompts, refs, label)
