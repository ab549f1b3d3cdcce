"""What an Arrow column of a dataset holds, per row: text, chat messages, JSON values.

Each check is a mask over one batch column, computed with ``pyarrow.compute``: a column
never turns into Python objects, except the JSON text of chat messages whose shape
varies from row to row (``datasets``' ``Json`` feature), which is decoded to be checked.
"""

from __future__ import annotations

import json


def _text_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def is_json_type(t) -> bool:
    """``datasets``' ``Json`` feature: Arrow's JSON extension type, JSON text underneath."""
    return getattr(t, "extension_name", None) == "arrow.json"


def is_list_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t)


def is_chat_type(t) -> bool:
    """An Arrow type of chat messages, in each form ``datasets`` stores them: a list of
    structs with a ``role`` field (messages of one shape), or a list of JSON values
    (``List(Json())``: what ``datasets`` makes of messages whose keys or value types differ
    from row to row, tool calls say; each message must then be a JSON object)."""
    import pyarrow as pa

    if not is_list_type(t):
        return False
    value = t.value_type
    return (pa.types.is_struct(value) and value.get_field_index("role") >= 0) or is_json_type(value)


# JSON text of a value that says nothing: an empty or blank string, list or object, or null.
_EMPTY_JSON = r'^\s*("(\s|\\[nrt])*"|\[\s*\]|\{\s*\}|null)\s*$'


def _present(array):
    """Per element: not null and, for a list, not empty (for JSON text, not an empty or
    blank string, list or object)."""
    import pyarrow.compute as pc

    present = pc.is_valid(array)
    if is_list_type(array.type):
        present = pc.and_(present, pc.fill_null(pc.greater(pc.list_value_length(array), 0), False))
    elif is_json_type(array.type):
        storage = array.storage if hasattr(array, "storage") else json_storage(array)
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
    if is_json_type(messages.type):  # each message is JSON text: decoded and checked one by one
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


def json_storage(column):
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

    storage = json_storage(column)
    head = pc.utf8_slice_codeunits(pc.utf8_ltrim_whitespace(storage), 0, 1)
    text = pc.fill_null(pc.equal(head, '"'), False).to_numpy(zero_copy_only=False)
    chat = pc.fill_null(pc.equal(head, "["), False).to_numpy(zero_copy_only=False)
    invalid = ~(text | chat)
    for i in np.flatnonzero(chat):
        messages = json.loads(storage[int(i)].as_py())
        invalid[i] = not (messages and all(_message_ok(m) for m in messages))
    blank = pc.fill_null(pc.match_substring_regex(storage, _EMPTY_JSON), False).to_numpy(zero_copy_only=False)
    return invalid, text & blank, chat


def column_masks(column) -> tuple[object, object, object, str | None]:
    """(invalid, empty, chat, what a non-text column holds) for one batch column: masks of
    the rows whose value is invalid, empty text, and chat messages (the rest is text)."""
    import numpy as np
    import pyarrow.compute as pc

    n = len(column)
    no = np.zeros(n, dtype=bool)
    if is_json_type(column.type):
        return (*_json_masks(column), None)
    if _text_type(column.type):
        invalid = pc.is_null(column).to_numpy(zero_copy_only=False)
        length = pc.utf8_length(pc.utf8_trim_whitespace(column))
        empty = pc.fill_null(pc.equal(length, 0), False).to_numpy(zero_copy_only=False)
        return invalid, empty, no, None
    if is_chat_type(column.type):
        return _bad_messages(column), no, np.ones(n, dtype=bool), None
    return np.ones(n, dtype=bool), no, no, str(column.type)
