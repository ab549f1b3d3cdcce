"""Data files by name: the format a suffix means, compression, UTF-8, CSV headers.

What the built-in loader would refuse in a local data file is found here without loading
it (:func:`data_file_problem`); the files are streamed, never read whole.
"""

from __future__ import annotations

from pathlib import Path

# Data files the built-in loader reads, by suffix: the ``datasets`` builder of each. Text
# formats may also be compressed (``train.jsonl.gz``): ``datasets`` decompresses them.
FILE_FORMATS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".tsv": "csv",
                ".txt": "text", ".parquet": "parquet", ".arrow": "arrow"}
FORMAT_OPTIONS = {".tsv": {"sep": "\t"}}
TEXT_FORMATS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}
JSON_LINES = (".jsonl", ".ndjson")


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


def not_utf8(raw: bytes, at: int) -> str:
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
                return line + block.count(b"\n", 0, start), not_utf8(raw, exc.start - start)
            line += block.count(b"\n")
            if not data:
                return None



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
