"""Checks on training data that name the bad row, file line or setting, and scale.

Two places: :func:`read_jsonl_problem` and :func:`load_jsonl_dropping` look into a JSON
Lines file that ``datasets`` could not load (the line and the parse error, or the good
lines only under ``data.on_error: drop``); :func:`prepare_dataset` runs, in the trainers,
before tokenisation: the text columns checked in Arrow batches (nulls, values that are
not text or chat messages, empty strings), then the data filters, then the filter report.

Row checks never turn a column into Python objects: each batch is a ``pyarrow.Table``
and the masks are computed with ``pyarrow.compute``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

ON_ERROR = ("raise", "drop")
CHECK_BATCH = 50_000
MAX_EXAMPLES = 3

# Data files the built-in loader reads, by suffix: the ``datasets`` builder of each. Text
# formats may also be compressed (``train.jsonl.gz``): ``datasets`` decompresses them.
FILE_FORMATS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".tsv": "csv",
                ".txt": "text", ".parquet": "parquet", ".arrow": "arrow"}
FORMAT_OPTIONS = {".tsv": {"sep": "\t"}}
TEXT_FORMATS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}
JSON_LINES = (".jsonl", ".ndjson")

# Reports of what loading dropped (malformed lines), keyed by the loaded dataset's
# fingerprint, picked up by the trainer that prepares that dataset.
_LOAD_REPORTS: dict[str, dict] = {}


@dataclass(frozen=True)
class DataOptions:
    """What to do with bad rows: ``on_error`` ``raise`` (stop at the first, naming it) or
    ``drop`` (drop and count them); ``drop_empty`` drops rows with an empty text column."""

    on_error: str = "raise"
    drop_empty: bool = False

    @classmethod
    def of(cls, recipe=None) -> DataOptions:
        data = getattr(getattr(recipe, "spec", None), "data", None)
        if data is None:
            return cls()
        return cls(getattr(data, "on_error", "raise"), bool(getattr(data, "drop_empty", False)))


# -- JSON Lines files ----------------------------------------------------------------------


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


def file_suffix(path) -> tuple[str, str | None]:
    """(format suffix, compression suffix or None) of a file name, lower case:
    ``(".jsonl", ".gz")`` for ``train.jsonl.gz``, ``(".csv", None)`` for ``a.b.CSV``."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if len(suffixes) > 1 and suffixes[-1] in COMPRESSIONS:
        return suffixes[-2], suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def file_format(path) -> tuple[str, dict] | None:
    """The ``datasets`` builder and its options for a data file, or None when the built-in
    loader cannot read a file of that name (see :data:`FILE_FORMATS`)."""
    suffix, compression = file_suffix(path)
    if suffix not in FILE_FORMATS or (compression and suffix not in TEXT_FORMATS):
        return None
    return FILE_FORMATS[suffix], dict(FORMAT_OPTIONS.get(suffix, {}))


def unknown_format(path) -> str:
    """What to say about a data file whose suffix the built-in loader does not know."""
    suffix, compression = file_suffix(path)
    shown = "".join(Path(path).suffixes[-2:] if compression else Path(path).suffixes[-1:]) or "(none)"
    known = ", ".join(FILE_FORMATS)
    return (f"the data file {str(path)!r} has the suffix {shown!r}, which trl-plus cannot read: convert it to one of "
            f"{known} (text formats may be compressed: {', '.join(COMPRESSIONS)}), or rename it if it already is one "
            "of these formats")


def open_binary(path):
    """A data file opened for reading bytes, decompressed by its suffix."""
    _, compression = file_suffix(path)
    if compression is None:
        return open(path, "rb")
    import importlib

    return importlib.import_module(COMPRESSIONS[compression]).open(path, "rb")


def _not_utf8(raw: bytes, at: int) -> str:
    return (f"not UTF-8 text (byte 0x{raw[at]:02x} at byte {at + 1} of the line); re-encode the file "
            "as UTF-8 (iconv -f latin1 -t utf-8 FILE, say, for a Latin-1 file)")


def utf8_problem(path, chunk: int = 1 << 24) -> tuple[int, str] | None:
    """The first line of a text data file that is not UTF-8, as (line number, problem);
    None when the whole file is UTF-8. Streams the file in large blocks of whole lines."""
    line, rest = 1, b""
    with open_binary(path) as f:
        while True:
            data = f.read(chunk)
            block = rest + data
            cut = block.rfind(b"\n") + 1 if data else len(block)
            block, rest = block[:cut], block[cut:]
            try:
                block.decode("utf-8")
            except UnicodeDecodeError as exc:
                start = block.rfind(b"\n", 0, exc.start) + 1
                end = block.find(b"\n", exc.start)
                raw = block[start : end if end >= 0 else len(block)]
                return line + block.count(b"\n", 0, start), _not_utf8(raw, exc.start - start)
            line += block.count(b"\n")
            if not data:
                return None


def _lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line number, line, problem or None) per non-blank line, streamed: a problem is a
    line that is not UTF-8, a parse error, or a value that is not a JSON object (a row)."""
    with open_binary(path) as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, "", _not_utf8(raw, exc.start)
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
    return all(_list_type(k) and not is_chat_type(k) for k in kinds)


def csv_header_problem(path) -> str | None:
    """A CSV (or TSV) file whose header row names a column twice: ``datasets`` would rename
    the second to ``NAME.1`` and the column would be ignored without a word."""
    import csv
    import io

    suffix, _ = file_suffix(path)
    with open_binary(path) as f:
        text = io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="")
        header = next(csv.reader(text, delimiter="\t" if suffix == ".tsv" else ","), None)
    seen: dict[str, int] = {}
    for i, name in enumerate(header or [], 1):
        if name in seen:
            return (f"the header row names column {name!r} twice (columns {seen[name]} and {i}); rename or remove "
                    "one of them")
        seen[name] = i
    return None


def data_file_problem(path, on_error: str = "raise") -> str | None:
    """What the built-in loader would refuse in a local data file, found without loading
    it: an unknown suffix, an empty file, a CSV header naming a column twice, a line that
    is not UTF-8 (in a JSON Lines file under ``on_error="drop"``, such a line is dropped
    on loading instead). None when none of these (or when ``path`` is not a file)."""
    path = Path(path)
    if not path.is_file():
        return None
    if file_format(path) is None:
        return unknown_format(path)
    if path.stat().st_size == 0:
        return f"the file {str(path)!r} is empty (no rows)"
    import lzma

    suffix, compression = file_suffix(path)
    try:
        if suffix in (".csv", ".tsv"):
            problem = csv_header_problem(path)
            if problem:
                return f"{path}: {problem}"
        if suffix in TEXT_FORMATS and not (suffix in JSON_LINES and on_error == "drop"):
            bad = utf8_problem(path)
            if bad is not None:
                drop = "; or set data.on_error: drop to drop such lines" if suffix in JSON_LINES else ""
                return f"{path}, line {bad[0]}: {bad[1]}{drop}"
    except (OSError, EOFError, lzma.LZMAError) as exc:  # a damaged or mislabelled compressed file
        what = f"as a {COMPRESSIONS[compression]}-compressed file" if compression else "(a read error)"
        return (f"the file {str(path)!r} cannot be read {what}: {exc}; it is damaged or truncated, or its suffix "
                "does not say how it is stored")
    return None


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


def remember_load_report(dataset, report: dict) -> None:
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint is not None and report.get("malformed_lines"):
        _LOAD_REPORTS[fingerprint] = report


def _load_report_of(dataset) -> dict | None:
    return _LOAD_REPORTS.pop(getattr(dataset, "_fingerprint", None), None)


# -- row checks over Arrow -----------------------------------------------------------------


def _text_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _json_type(t) -> bool:
    """``datasets``' ``Json`` feature: Arrow's JSON extension type, JSON text underneath."""
    return getattr(t, "extension_name", None) == "arrow.json"


def _list_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t)


def is_chat_type(t) -> bool:
    """An Arrow type of chat messages, in each form ``datasets`` stores them: a list of
    structs with a ``role`` field (messages of one shape), or a list of JSON values
    (``List(Json())``: what ``datasets`` makes of messages whose keys or value types differ
    from row to row, tool calls say; each message must then be a JSON object)."""
    import pyarrow as pa

    if not _list_type(t):
        return False
    value = t.value_type
    return (pa.types.is_struct(value) and value.get_field_index("role") >= 0) or _json_type(value)


# JSON text of a value that says nothing: an empty or blank string, list or object, or null.
_EMPTY_JSON = r'^\s*("(\s|\\[nrt])*"|\[\s*\]|\{\s*\}|null)\s*$'


def _present(array):
    """Per element: not null and, for a list, not empty (for JSON text, not an empty or
    blank string, list or object)."""
    import pyarrow.compute as pc

    present = pc.is_valid(array)
    if _list_type(array.type):
        present = pc.and_(present, pc.fill_null(pc.greater(pc.list_value_length(array), 0), False))
    elif _json_type(array.type):
        storage = array.storage if hasattr(array, "storage") else _json_storage(array)
        empty = pc.fill_null(pc.match_substring_regex(storage, _EMPTY_JSON), True)
        present = pc.and_(present, pc.invert(empty))
    return present


def _loads(text):
    return None if text is None else json.loads(text)


def _bad_messages(column):
    """Row mask of chat-message rows TRL cannot render: no messages, a message without a
    role, or one with neither ``content`` (text or a list of parts) nor ``tool_calls``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(column)
    bad = np.logical_not(_present(column).to_numpy(zero_copy_only=False))
    messages = pc.list_flatten(column)
    if len(messages) == 0:
        return bad
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    parents = pc.list_parent_indices(column).to_numpy()
    if _json_type(messages.type):  # each message is JSON text: decoded and checked one by one
        texts = messages.storage.to_pylist()
        wrong = np.fromiter((not _message_ok(_loads(t)) for t in texts), dtype=bool, count=len(texts))
    else:
        ok = pc.and_(pc.is_valid(messages), pc.is_valid(pc.struct_field(messages, "role")))
        said = None
        for name in ("content", "tool_calls"):
            if messages.type.get_field_index(name) >= 0:
                has = _present(pc.struct_field(messages, name))
                said = has if said is None else pc.or_(said, has)
        if said is None:  # messages with neither field: none can be rendered
            said = pa.array(np.zeros(len(messages), dtype=bool))
        ok = pc.and_(ok, said)
        wrong = np.logical_not(pc.fill_null(ok, False).to_numpy(zero_copy_only=False))
    bad[np.unique(parents[wrong])] = True
    return bad[:n]


def _message_ok(message) -> bool:
    return (isinstance(message, dict) and isinstance(message.get("role"), str)
            and bool(message.get("content") or message.get("tool_calls")))


def _json_storage(column):
    """The JSON text under a ``Json`` column (an array or chunked array of the extension type)."""
    import pyarrow as pa

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return pa.chunked_array([c.storage for c in chunks], type=column.type.storage_type)


def _json_masks(column):
    """A column of mixed JSON values (``datasets``' ``Json`` feature, stored as JSON text):
    text values start with a quote; lists (chat messages) are decoded and checked.
    Returns (invalid, empty, chat) masks."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    storage = _json_storage(column)
    head = pc.utf8_slice_codeunits(pc.utf8_ltrim_whitespace(storage), 0, 1)
    text = pc.fill_null(pc.equal(head, '"'), False).to_numpy(zero_copy_only=False)
    chat = pc.fill_null(pc.equal(head, "["), False).to_numpy(zero_copy_only=False)
    invalid = ~(text | chat)
    for i in np.flatnonzero(chat):
        messages = json.loads(storage[int(i)].as_py())
        invalid[i] = not (messages and all(_message_ok(m) for m in messages))
    blank = pc.fill_null(pc.match_substring_regex(storage, _EMPTY_JSON), False).to_numpy(zero_copy_only=False)
    return invalid, text & blank, chat


def _column_masks(column) -> tuple[object, object, object, str | None]:
    """(invalid, empty, chat, what a non-text column holds) for one batch column: masks of
    the rows whose value is invalid, empty text, and chat messages (the rest is text)."""
    import numpy as np
    import pyarrow.compute as pc

    n = len(column)
    no = np.zeros(n, dtype=bool)
    if _json_type(column.type):
        return (*_json_masks(column), None)
    if _text_type(column.type):
        invalid = pc.is_null(column).to_numpy(zero_copy_only=False)
        length = pc.utf8_length(pc.utf8_trim_whitespace(column))
        empty = pc.fill_null(pc.equal(length, 0), False).to_numpy(zero_copy_only=False)
        return invalid, empty, no, None
    if is_chat_type(column.type):
        return _bad_messages(column), no, np.ones(n, dtype=bool), None
    return np.ones(n, dtype=bool), no, no, str(column.type)


_FORMS = {True: "chat messages", False: "plain text"}


def _one_form(masks: dict, start: int, form, dataset, name: str):
    """Every valid value of every checked column is in one form, plain text or chat
    messages: TRL decides from the first row whether a dataset is conversational, and a
    row of the other form trains wrongly or crashes deep inside TRL. ``form`` is (is chat,
    row, column) of the first valid value (None before one is seen); returns it."""
    import numpy as np

    if form is None:
        for column, (bad, chat) in masks.items():
            valid = ~bad
            if valid.any():
                i = int(np.argmax(valid))
                if form is None or start + i < form[1]:
                    form = (bool(chat[i]), start + i, column)
        if form is None:
            return None
    other = None
    for column, (bad, chat) in masks.items():
        wrong = ~bad & (chat != form[0])
        if wrong.any():
            i = int(np.argmax(wrong))
            if other is None or i < other[0]:
                other = (i, column)
    if other is not None:
        i, column = other
        raise DataError(
            f"{name} dataset row {start + i}: column {column!r} holds {_FORMS[not form[0]]}, but row {form[1]} "
            f"(column {form[2]!r}) holds {_FORMS[form[0]]}; every row of a dataset must be in one form, all plain "
            f"text or all chat messages (row: {str(short_row(dataset[start + i]))[:300]}); convert the rows of one "
            "form to the other"
        )
    return form


def _describe(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return (f"chat messages with one TRL cannot render, a message needs a role and content or tool_calls "
                f"({json.dumps(value, default=str)[:160]})")
    return f"{value!r} ({type(value).__name__})"


def short_row(row, limit: int = 200) -> dict:
    """A row for a report or an error: every value as text, each cut at ``limit`` characters."""
    out = {}
    for key, value in row.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[key] = text if len(text) <= limit else text[:limit] + "..."
    return out


def check_rows(dataset, columns, name: str, options: DataOptions = DataOptions()):
    """Check ``columns`` of every row, in Arrow batches; returns (dataset, report).

    A null, a value that is neither text nor chat messages, or a conversation TRL cannot
    render is an invalid row: with ``on_error="raise"`` the first one is a
    :class:`DataError` naming its index and column, with ``"drop"`` they are dropped and
    counted. Empty (or whitespace-only) strings are counted per column, and dropped with
    ``drop_empty``. The values kept are all plain text or all chat messages (each form
    ``datasets`` stores: see :func:`is_chat_type`); the first of the other form is a
    :class:`DataError` whatever ``on_error`` says, naming that row and the first row.
    """
    import numpy as np

    columns = [c for c in columns if c in dataset.column_names]
    report = {"invalid_rows": 0, "empty": {c: 0 for c in columns}, "empty_dropped": 0, "examples": []}
    if not columns or len(dataset) == 0:
        return dataset, report
    drop = np.zeros(len(dataset), dtype=bool)
    start = 0
    form = None
    for batch in dataset.select_columns(columns).with_format("arrow").iter(batch_size=CHECK_BATCH):
        n = batch.num_rows
        invalid = np.zeros(n, dtype=bool)
        first: tuple[int, str, str | None] | None = None
        forms = {}
        for column in columns:
            bad, empty, chat, held = _column_masks(batch.column(column))
            forms[column] = (bad | empty if options.drop_empty else bad, chat)
            report["empty"][column] += int(np.count_nonzero(empty & ~bad))
            if options.drop_empty:
                drop[start : start + n] |= empty
            if bad.any():
                i = int(np.argmax(bad))
                if first is None or i < first[0]:
                    first = (i, column, held)
                invalid |= bad
        if first is not None and options.on_error == "raise":
            i, column, held = first
            row = dataset[start + i]
            what = f"holds {held} values" if held else f"is {_describe(row[column])}"
            raise DataError(
                f"{name} dataset row {start + i}: column {column!r} {what}; expected text or a list of chat messages "
                f"(row: {str(short_row(row))[:300]}); fix the row, or set data.on_error: drop to drop such rows"
            )
        form = _one_form(forms, start, form, dataset, name)
        for i in np.flatnonzero(invalid)[: MAX_EXAMPLES - len(report["examples"])]:
            report["examples"].append({"row": start + int(i), **short_row(dataset[start + int(i)])})
        report["invalid_rows"] += int(np.count_nonzero(invalid))
        drop[start : start + n] |= invalid
        start += n
    if options.drop_empty:
        report["empty_dropped"] = int(np.count_nonzero(drop)) - report["invalid_rows"]
    if drop.any():
        dataset = dataset.select(np.flatnonzero(~drop))
    return dataset, report


# -- chat templates ------------------------------------------------------------------------


def conversational_column(dataset, columns) -> str | None:
    """The first of ``columns`` that holds chat messages, or None: by its type, or for a
    column of mixed JSON values (``Json``), by its first value (:func:`check_rows` has
    made sure that every row is of one form)."""
    import pyarrow.compute as pc

    schema = dataset.data.schema
    for column in columns:
        if column not in dataset.column_names:
            continue
        kind = schema.field(column).type
        if is_chat_type(kind):
            return column
        if _json_type(kind):
            head = dataset.select_columns([column]).with_format("arrow")[: min(len(dataset), 1000)].column(0)
            values = pc.drop_null(_json_storage(head))
            if len(values) and values[0].as_py().lstrip().startswith("["):
                return column
    return None



def check_chat_template(dataset, columns, processing_class, name: str) -> None:
    """Chat messages need a chat template: say so at start-up, not at the first step."""
    if processing_class is None:
        return
    column = conversational_column(dataset, columns)
    if column is None:
        return
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if getattr(processing_class, "chat_template", None) or getattr(tokenizer, "chat_template", None):
        return
    raise DataError(
        f"the {name} dataset is conversational (column {column!r} holds chat messages), but the tokenizer "
        f"({type(tokenizer).__name__}, {getattr(tokenizer, 'name_or_path', '') or 'in memory'}) has no chat "
        "template: set tokenizer.chat_template, or use a tokenizer that has one (model.tokenizer in a recipe)"
    )


# -- everything before tokenisation ----------------------------------------------------------


def prepare_dataset(dataset, columns, name: str, chain=None, *, options: DataOptions = DataOptions(),
                    processing_class=None, reports: dict | None = None, output_dir: str | None = None):
    """Check, filter and report one dataset split before TRL tokenises it.

    ``reports[name]`` gets the split's entry of ``filter_report.json``: ``rows_in``,
    ``rows_out``, ``checks`` (malformed lines dropped at loading, invalid rows, empty
    strings) and ``filters`` (what each filter dropped). When nothing is left, the report
    is written to ``output_dir`` first and the error says where.
    """
    from datasets import Dataset

    if not isinstance(dataset, Dataset) or "input_ids" in dataset.column_names:
        return dataset
    if options.on_error not in ON_ERROR:
        raise DataError(f"data.on_error must be one of {', '.join(ON_ERROR)}, got {options.on_error!r}")
    loaded = _load_report_of(dataset)
    rows_in = len(dataset)
    dataset, checks = check_rows(dataset, columns, name, options)
    check_chat_template(dataset, columns, processing_class, name)
    checks = {"on_error": options.on_error, "drop_empty": options.drop_empty,
              "malformed_lines": loaded["malformed_lines"] if loaded else 0, **checks}
    if loaded:
        checks["malformed_examples"] = loaded["examples"]
    entry = {"rows_in": rows_in, "rows_out": len(dataset), "checks": checks, "filters": []}
    if chain:
        dataset = chain.apply_to_dataset(dataset)
        entry["rows_out"] = len(dataset)
        entry["filters"] = chain.report()["filters"]
    if reports is not None:
        reports[name] = entry
    if len(dataset) == 0:
        _nothing_left(name, entry, reports, output_dir)
    return dataset


def filter_token_ids(dataset, name: str, chain, columns, *, text_columns=(), reports: dict | None = None,
                     output_dir: str | None = None):
    """The token-id stage of one split, after TRL has tokenised it: the filters the chain
    deferred (``FilterChain.defer_to_token_ids``) judge each row by TRL's token counts.
    ``reports[name]`` (from :func:`prepare_dataset`) is brought up to date: the filters'
    drops, ``rows_out``, and ``dropped_by_trl`` for rows TRL's own preparation dropped."""
    entry = (reports or {}).get(name)
    if entry is None or not chain.deferred:  # the text stage did not run (not a Dataset, or pre-tokenised)
        return dataset
    if len(dataset) < entry["rows_out"]:
        entry["dropped_by_trl"] = entry["rows_out"] - len(dataset)
    dataset = chain.apply_to_token_ids(dataset, columns, text_columns)
    entry["rows_out"] = len(dataset)
    entry["filters"] = chain.report()["filters"]
    if len(dataset) == 0:
        _nothing_left(name, entry, reports, output_dir)
    return dataset


def _nothing_left(name: str, entry: dict, reports: dict | None, output_dir: str | None):
    """Every row of a split is gone: write the filter report first, then say where."""
    where = ""
    if output_dir is not None and reports is not None:
        from accelerate import PartialState

        from .trainers.common import FILTER_REPORT, write_filter_report

        if PartialState().is_main_process:
            write_filter_report(output_dir, reports)
        where = f"; see {Path(output_dir, FILTER_REPORT).resolve()}"
    dropped = {f["name"]: f["dropped"] for f in entry["filters"]}
    checks = entry["checks"]
    bad = checks["invalid_rows"] + checks["empty_dropped"]
    by_trl = f", TRL's preparation dropped {entry['dropped_by_trl']}" if entry.get("dropped_by_trl") else ""
    raise DataError(
        f"the data checks and filters dropped every row of the {name} dataset ({entry['rows_in']} in; checks dropped "
        f"{bad}, filters dropped {dropped}{by_trl})"
        f"{where}"
    )
