"""JSON and JSON Lines files: the first bad line, loading the good lines only, and a
``.json`` file whose shape ``datasets`` would misread.

A JSON Lines file that ``datasets`` could not load is looked into line by line
(:func:`read_jsonl_problem`: the line and its parse error); under ``data.on_error: drop``
its good lines are loaded and the bad ones counted (:func:`load_jsonl_dropping`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError
from .columns import is_chat_type, is_list_type
from .files import JSON_LINES, file_format, file_suffix, not_utf8, open_binary
from .report import MAX_EXAMPLES


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line number, line, problem or None) per non-blank line, streamed: a problem is a
    line that is not UTF-8, a parse error, or a value that is not a JSON object (a row)."""
    with open_binary(path) as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, "", not_utf8(raw, exc.start)
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                column = exc.pos + 1 if exc.pos < len(line.rstrip("\r\n")) else "the end of the line"
                yield number, line, f"not valid JSON ({exc.msg} at column {column})"
                continue
            yield number, line, None if isinstance(row, dict) else f"not a JSON object but {_kind(row)}"


def is_json_lines(path) -> bool:
    return (isinstance(path, (str, os.PathLike)) and file_suffix(path)[0] in JSON_LINES
            and file_format(path) is not None and Path(path).is_file())


def read_jsonl_problem(path) -> tuple[int, str] | None:
    """The first bad line of a JSON Lines file as (line number, problem); ``(0, ...)``
    when the file has no rows at all; None when every line is a good row, or when the file
    cannot be read line by line at all (a damaged compressed file: the loader says so)."""
    import lzma

    rows = 0
    try:
        for number, _, problem in _lines(Path(path)):
            if problem is not None:
                return number, problem
            rows += 1
    except (OSError, EOFError, lzma.LZMAError):
        return None
    return None if rows else (0, "the file is empty (no rows)")


def one_object_of_lists(path, dataset) -> bool:
    """A ``.json`` file that is one object whose values are lists (columns, or rows under
    one key): ``datasets`` reads it as a single row of lists. One conversation (chat
    messages under each key) is a row, and not this."""
    if file_suffix(path)[0] != ".json" or len(dataset) != 1 or not dataset.column_names:
        return False
    schema = dataset.data.schema
    kinds = [schema.field(c).type for c in dataset.column_names]
    return all(is_list_type(k) and not is_chat_type(k) for k in kinds)


def load_jsonl_dropping(path, load) -> tuple[object, dict]:
    """Load the good lines of a JSON Lines file with ``load(good_file)``, streaming them
    through a temporary file; returns (dataset, report) with the count of malformed lines
    and the first few (line number and problem)."""
    path = Path(path)
    dropped, examples, kept = 0, [], 0
    fd, tmp = tempfile.mkstemp(suffix=".jsonl", prefix="trl-plus-good-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for number, line, problem in _lines(path):
                if problem is not None:
                    dropped += 1
                    if len(examples) < MAX_EXAMPLES:
                        examples.append({"line": number, "problem": problem})
                    continue
                out.write(line if line.endswith("\n") else line + "\n")
                kept += 1
        if not kept:
            first = examples[0] if examples else None
            detail = f"; line {first['line']}: {first['problem']}" if first else ""
            raise DataError(f"{path}: no good row to load (every line is malformed{detail})")
        dataset = load(tmp)
    finally:
        os.unlink(tmp)
    return dataset, {"file": str(path), "malformed_lines": dropped, "examples": examples}
