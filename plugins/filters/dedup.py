"""Data filter: drop repeated rows, exactly or after whitespace/case normalisation."""

from __future__ import annotations

import trl_plus

from ._text import as_text, completion_columns, normalise


class Dedup:
    """Keep the first occurrence of each row (over ``columns``; default prompt + completions)."""

    def __init__(self, columns: list[str] | None = None, normalize: bool = False):
        self.columns, self.normalize = columns, normalize
        self._seen: set = set()

    def __call__(self, batch):
        columns = self.columns or (["prompt"] if "prompt" in batch else []) + completion_columns(batch)
        n = len(next(iter(batch.values())))
        keep = []
        for i in range(n):
            key = tuple(as_text(batch[c][i]) for c in columns)
            if self.normalize:
                key = tuple(normalise(k) for k in key)
            keep.append(key not in self._seen)
            self._seen.add(key)
        return keep


@trl_plus.hookimpl
def trl_plus_register_data_filters(register):
    register.add("dedup", Dedup)
