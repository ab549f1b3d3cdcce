"""Data filter: keep (or drop) rows whose column matches a regular expression."""

from __future__ import annotations

import re

import trl_plus
from trl_plus.errors import RecipeError

from ._text import as_text


class RegexFilter:
    """``keep: true`` keeps matching rows; ``keep: false`` drops them (re.search)."""

    def __init__(self, column: str, pattern: str, keep: bool = True):
        try:
            self.regex = re.compile(pattern)
        except re.error as exc:
            raise RecipeError(f"invalid pattern {pattern!r}: {exc}") from None
        self.column, self.keep = column, keep

    def __call__(self, batch):
        return [bool(self.regex.search(as_text(v))) == self.keep for v in batch[self.column]]


@trl_plus.hookimpl
def trl_plus_register_data_filters(register):
    register.add("regex", RegexFilter)
