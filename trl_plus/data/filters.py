"""The data filters of a run, applied in order: what each one drops, counted for the
filter report, and the token-length stage, where the filters that judge a row by its
token counts (they have ``filter_token_lengths``) run on TRL's own token ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ComponentError
from .rows import short_row


@dataclass
class _FilterCount:
    name: str
    rows_in: int = 0
    dropped: int = 0
    examples: list = field(default_factory=list)


def _reasons(fn) -> dict:
    """A filter's own breakdown of its drops (a ``reasons`` dict of counts), if it keeps one."""
    reasons = getattr(fn, "reasons", None)
    return {"reasons": dict(reasons)} if isinstance(reasons, dict) else {}


class FilterChain:
    """Filters applied in order, counting what each one drops (for the filter report)."""

    def __init__(self, filters: Sequence[tuple[str, Any]], max_examples: int = 3):
        self.filters = list(filters)
        self.max_examples = max_examples
        self.counts = [_FilterCount(label) for label, _ in self.filters]
        self.rows_in = 0
        self.rows_out = 0
        self.deferred: set[int] = set()  # filters left for the token-id stage (defer_to_token_ids)

    def __bool__(self) -> bool:
        return bool(self.filters)

    @staticmethod
    def _decisions(label: str, call, batch: Mapping, n: int, what: str = "column") -> list:
        """``call(batch)``'s keep/drop per row, its errors named after the filter."""
        try:
            keep = list(call(batch))
        except ComponentError:
            raise
        except KeyError as exc:
            raise ComponentError(f"data filter {label!r} needs {what} {exc} (columns: {sorted(batch)})") from exc
        except Exception as exc:
            raise ComponentError(f"data filter {label!r} raised: {exc!r}") from exc
        if len(keep) != n:
            raise ComponentError(f"data filter {label!r} returned {len(keep)} decisions for {n} rows")
        return keep

    def _keep(self, index: int, batch: dict[str, list]) -> list[bool]:
        label, fn = self.filters[index]
        n = len(next(iter(batch.values()))) if batch else 0
        return [bool(k) for k in self._decisions(label, fn, batch, n)]

    def mask(self, batch: dict[str, list]) -> list[bool]:
        """Keep/drop per row of one batch, every filter applied, counts updated."""
        n = len(next(iter(batch.values()))) if batch else 0
        self.rows_in += n
        alive = list(range(n))
        for i, count in enumerate(self.counts):
            if not alive:
                break
            if i in self.deferred:
                continue
            sub = {k: [v[j] for j in alive] for k, v in batch.items()}
            keep = self._keep(i, sub)
            count.rows_in += len(alive)
            for j, k in zip(alive, keep):
                if not k:
                    count.dropped += 1
                    if len(count.examples) < self.max_examples:
                        count.examples.append(short_row({key: batch[key][j] for key in batch}))
            alive = [j for j, k in zip(alive, keep) if k]
        self.rows_out += len(alive)
        kept = set(alive)
        return [j in kept for j in range(n)]

    def apply_to_dataset(self, dataset, batch_size: int = 1000):
        """The rows of a ``datasets.Dataset`` that every filter keeps.

        One pass of ``Dataset.filter(batched=True)`` in this process (filters may keep
        state across batches, as dedup does), never read back from a cache: the counts
        must come from this run."""
        if not self.filters or len(dataset) == 0:
            return dataset
        if len(self.deferred) == len(self.filters):  # all of them wait for the token ids
            self.rows_in += len(dataset)
            self.rows_out += len(dataset)
            return dataset
        from datasets.fingerprint import generate_random_fingerprint

        kept = dataset.filter(
            self.mask, batched=True, batch_size=batch_size, load_from_cache_file=False, keep_in_memory=True,
            new_fingerprint=generate_random_fingerprint(),
        )
        return kept if len(kept) < len(dataset) else dataset

    def report(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "filters": [
                {"name": c.name, "rows_in": c.rows_in, "dropped": c.dropped, **_reasons(fn), "examples": c.examples,
                 **({"stage": "token_ids"} if i in self.deferred else {})}
                for i, (c, (_, fn)) in enumerate(zip(self.counts, self.filters))
            ],
        }

    # -- the token-id stage: filters that bound TRL's own token counts ------------------------
    def defer_to_token_ids(self) -> bool:
        """Leave the filters that can judge a row by its token counts (they have a
        ``filter_token_lengths`` method) for :meth:`apply_to_token_ids`, after TRL has
        tokenised the data: the counts are then TRL's own, and nothing is tokenised twice.
        The other filters keep their order and run on the text. Returns whether any was left."""
        self.deferred = {i for i, (_, fn) in enumerate(self.filters) if callable(getattr(fn, "filter_token_lengths", None))}
        return bool(self.deferred)

    def apply_to_token_ids(self, dataset, columns: Mapping[str, str], text_columns: Sequence[str] = ()):
        """The rows of a tokenised ``datasets.Dataset`` that every deferred filter keeps.

        ``columns`` maps the names a filter sees to the dataset's token-id columns
        (``{"prompt": "prompt_ids", "chosen": "chosen_ids", ...}``); each filter's
        ``filter_token_lengths`` gets ``{name: numpy array of per-row lengths}`` of the rows
        still in, read from the Arrow list offsets (no ids become Python objects), and
        returns keep/drop per row. Dropped rows' ``text_columns`` are the report's examples.
        """
        import numpy as np

        if not self.deferred or len(dataset) == 0:
            return dataset
        lengths = {name: _list_lengths(dataset, col) for name, col in columns.items() if col in dataset.column_names}
        alive = np.arange(len(dataset))
        for i in sorted(self.deferred):
            if not len(alive):
                break
            label, fn = self.filters[i]
            batch = {name: n[alive] for name, n in lengths.items()}
            keep = np.asarray(self._decisions(label, fn.filter_token_lengths, batch, len(alive), "token column"), dtype=bool)
            count = self.counts[i]
            count.rows_in += len(alive)
            dropped = alive[~keep]
            count.dropped += len(dropped)
            for j in dropped[: max(self.max_examples - len(count.examples), 0)]:
                row = dataset[int(j)]
                count.examples.append(short_row({k: row[k] for k in text_columns if k in row}))
            alive = alive[keep]
        self.rows_out -= len(dataset) - len(alive)
        return dataset if len(alive) == len(dataset) else dataset.select(alive)

    def counts_state(self) -> dict:
        """The counts a checkpoint keeps (rows in and out, per filter), so a resumed run goes on counting."""
        return {"rows_in": self.rows_in, "rows_out": self.rows_out,
                "filters": [{"name": c.name, "rows_in": c.rows_in, "dropped": c.dropped} for c in self.counts]}

    def restore_counts(self, state: Mapping) -> None:
        self.rows_in, self.rows_out = int(state["rows_in"]), int(state["rows_out"])
        for count, saved in zip(self.counts, state.get("filters") or []):
            if count.name == saved.get("name"):  # the same filter in the same place
                count.rows_in, count.dropped = int(saved["rows_in"]), int(saved["dropped"])

    def write_report(self, path: str | Path, **extra) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**self.report(), **extra}, indent=2))


def _list_lengths(dataset, column: str):
    """Per-row lengths of a list column of a ``datasets.Dataset``, in the dataset's row
    order: computed by Arrow on each chunk of the stored table, then put in the order of
    the dataset's indices mapping when it has one (a filtered or shuffled dataset)."""
    import numpy as np
    import pyarrow.compute as pc

    chunks = dataset.data.column(column).chunks
    n = np.concatenate([pc.list_value_length(c).fill_null(0).to_numpy() for c in chunks]) if chunks else np.zeros(0, int)
    indices = getattr(dataset, "_indices", None)  # datasets keeps a filter's or shuffle's row order here
    if indices is not None:
        n = n[indices.column(0).to_numpy()]
    if len(n) != len(dataset):  # a datasets version that keeps its row order elsewhere: ask for the rows
        n = np.asarray([len(x) for x in dataset[column]])
    return n
