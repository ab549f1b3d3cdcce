"""Helpers shared by the built-in filters: text of a cell, the completion columns."""

from __future__ import annotations

import json

COMPLETION_COLUMNS = ("chosen", "rejected", "completion")


def _message_text(message) -> str:
    if not isinstance(message, dict):
        return str(message)
    content = message.get("content")
    if isinstance(content, list):  # multimodal parts: their text
        content = " ".join(p.get("text") or "" if isinstance(p, dict) else str(p) for p in content)
    parts = [content] if content else []
    for call in message.get("tool_calls") or []:  # tool calls: their function and arguments
        function = call.get("function", call) if isinstance(call, dict) else {}
        arguments = function.get("arguments", "")
        parts.append(f"{function.get('name', '')}({arguments if isinstance(arguments, str) else json.dumps(arguments)})")
    return "\n".join(parts)


def as_text(value) -> str:
    """A cell as text: strings as they are, a chat as its messages' text joined (content,
    the text parts of a multimodal content list, tool calls as ``name(arguments)``)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_message_text(m) for m in value)
    return str(value)


def completion_columns(batch: dict) -> list[str]:
    return [c for c in COMPLETION_COLUMNS if c in batch]


def normalise(text: str) -> str:
    return " ".join(text.lower().split())
