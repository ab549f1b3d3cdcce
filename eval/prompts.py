"""Prompt sets: a JSONL file, a ``datasets`` split, or a recipe's data, with an optional
column of reference completions. Each set carries the sha256 of its content for the
manifest and the generation cache.

An empty (or whitespace-only) prompt is refused, naming how many and the first, unless
``drop_empty`` drops them (counted in ``PromptSet.empty_dropped``), as ``data.drop_empty``
drops empty rows in training: nothing is generated or judged for a prompt that says nothing."""

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
    empty_dropped: int = 0  # empty or whitespace-only prompts dropped on loading (drop_empty)

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
        return PromptSet(self.prompts[:n], refs, self.source, self.empty_dropped)


def _rows_from_jsonl(path: Path, where: str) -> list[dict]:
    import lzma

    try:
        return _read_jsonl(path, where)
    except (OSError, EOFError, lzma.LZMAError) as exc:  # a damaged compressed file
        raise DataError(f"{where}: the file {path} cannot be read: {exc}; it is damaged or truncated, or its suffix "
                        "does not say how it is stored") from None


def _read_jsonl(path: Path, where: str) -> list[dict]:
    from trl_plus.data.files import open_binary

    rows = []
    with open_binary(path) as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}: {path}, line {i}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte "
                                f"{exc.start + 1} of the line); re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{where}: {path}, line {i} is not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: {path}, line {i} is not a JSON object (a row with a prompt column) but "
                                f"{type(row).__name__} {json.dumps(row)[:80]}")
            rows.append(row)
    return rows


def _is_json_lines(source) -> bool:
    from trl_plus.data.files import JSON_LINES, file_format, file_suffix

    return isinstance(source, (str, Path)) and file_suffix(source)[0] in JSON_LINES and file_format(source) is not None


def load_prompts(
    source: Any,
    *,
    prompt_column: str = "prompt",
    reference_column: str | None = None,
    max_prompts: int | None = None,
    hooks=None,
    base_dir: str | Path | None = None,
    drop_empty: bool = False,
) -> PromptSet:
    """A prompt set from a ``.jsonl`` path, a dataset spec mapping (``{path, split, name,
    data_files}``, loaded through the ``trl_plus_load_dataset`` hook), a ``datasets.Dataset``,
    a list of strings, or a :class:`PromptSet`.

    ``reference_column`` names the column of reference completions; when it is not
    given, a ``reference`` or ``completion`` column is used if present. An empty file is
    said to be empty; empty or whitespace-only prompts are a :class:`DataError` unless
    ``drop_empty`` (then they are dropped and counted in ``empty_dropped``).
    """
    if isinstance(source, PromptSet):
        return source.head(max_prompts)
    if isinstance(source, Sequence) and not isinstance(source, str) and all(isinstance(s, str) for s in source):
        return PromptSet(list(source)).head(max_prompts)
    where = "eval.prompts"
    if isinstance(source, (str, Path)) and (_is_json_lines(source) or Path(str(source)).suffix == ".json"):
        path = Path(source)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.exists():
            raise DataError(f"{where}: file not found: {str(source)!r}")
    if isinstance(source, (str, Path)) and _is_json_lines(source):
        rows, label = _rows_from_jsonl(path, where), str(path)
        if not rows:
            raise DataError(f"{where}: the file {label} is empty (no rows); give a file with a {prompt_column!r} "
                            "column, one JSON object a line")
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
            if Path(spec["path"]).is_file() and Path(spec["path"]).stat().st_size == 0:
                raise DataError(f"{where}: the file {spec['path']} is empty (no rows)")
            try:
                dataset = Hooks.of(hooks).load_dataset(spec)
            except DataError as exc:
                if str(exc).startswith(f"{where}:"):
                    raise
                raise DataError(f"{where}: {exc}") from exc.__cause__
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
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty and not drop_empty:
        raise DataError(
            f"{where}: {len(empty)} of {len(prompts)} prompts of {label} are empty or whitespace only (the first: row "
            f"{empty[0]}); remove them, or drop them with --drop-empty (eval.drop_empty: true)"
        )
    if empty:
        keep = [i for i, p in enumerate(prompts) if p.strip()]
        if not keep:
            raise DataError(f"{where}: every prompt of {label} is empty or whitespace only ({len(prompts)})")
        prompts = [prompts[i] for i in keep]
        refs = [refs[i] for i in keep] if refs is not None else None
    return PromptSet(prompts, refs, label, len(empty))
