"""Helpers shared by the built-in filters: text of a cell, the completion columns."""

from __future__ import annotations

COMPLETION_COLUMNS = ("chosen", "rejected", "completion")


def as_text(value) -> str:
    """A cell as text: strings as they are, a chat as its messages' contents joined."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(m.get("content", "") if isinstance(m, dict) else str(m) for m in value)
    return str(value)


def completion_columns(batch: dict) -> list[str]:
    return [c for c in COMPLETION_COLUMNS if c in batch]


def normalise(text: str) -> str:
    return " ".join(text.lower().split())
