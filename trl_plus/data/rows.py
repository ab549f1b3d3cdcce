"""Row checks over Arrow, before TRL sees a dataset: the text columns of every row hold
text or chat messages (no nulls, no other values, conversations TRL can render), all in
one form; empty strings are counted; chat messages need a chat template.

Rows are checked in Arrow batches of :data:`CHECK_BATCH`, the masks computed by
:mod:`trl_plus.data.columns`; a column never turns into Python objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import DataError
from .columns import column_masks, is_chat_type, is_json_type, json_storage
from .report import MAX_EXAMPLES

ON_ERROR = ("raise", "drop")
CHECK_BATCH = 50_000


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
            bad, empty, chat, held = column_masks(batch.column(column))
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
        if is_json_type(kind):
            head = dataset.select_columns([column]).with_format("arrow")[: min(len(dataset), 1000)].column(0)
            values = pc.drop_null(json_storage(head))
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
