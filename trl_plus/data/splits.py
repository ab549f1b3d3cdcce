"""Loading a recipe's data split through the dataset hook, and what loading dropped.

:func:`load_split` returns the dataset with its load report (the malformed lines
``data.on_error: drop`` left out), and the caller hands that report on to
:func:`trl_plus.data.prepare.prepare_dataset`: nothing is kept on the side.
``hooks`` is always the caller's (a ``trl_plus.Hooks``): this module builds none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from ..errors import DataError
from .files import data_file_problem
from .json_files import is_json_lines, load_jsonl_dropping, one_object_of_lists, read_jsonl_problem

BUILTIN_LOADER = "trl_plus.plugins.loading"  # the module of the built-in trl_plus_load_dataset


class LoadedSplit(NamedTuple):
    """A loaded split (None when the recipe names none) and its load report: None when
    loading dropped nothing, else ``{"file", "malformed_lines", "examples"}``."""

    dataset: Any
    report: dict | None = None


def load_split(split, hooks, where: str, on_error: str = "raise") -> LoadedSplit:
    """One data split, loaded through the dataset hook, columns renamed, rows capped.

    A local file that is empty, or a JSON Lines file with a malformed line (not JSON, not
    an object, not UTF-8), is a :class:`DataError` naming the file (and the line and its
    problem); with ``on_error="drop"`` the malformed lines are dropped instead, and counted
    in the load report returned with the dataset (for the filter report of the trainer that
    prepares the split). Every other error of the loader is a :class:`DataError` under
    ``where.path``.
    """
    if split is None:
        return LoadedSplit(None)
    spec = split.model_dump()
    path = Path(spec["path"])
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{where}.path: the file {str(path)!r} is empty (no rows)")
    loaded = None
    try:
        dataset = hooks.load_dataset(spec)
    except DataError as exc:
        problem = read_jsonl_problem(path) if is_json_lines(path) else None
        if problem is None:
            message = str(exc)
            if message.startswith(f"{where}."):
                raise
            raise DataError(f"{where}.path: {message}") from exc.__cause__
        line, what = problem
        if line == 0:
            raise DataError(f"{where}.path: the file {str(path)!r} is empty (no rows)") from None
        if on_error != "drop":
            raise DataError(
                f"{where}.path: {path}, line {line}: {what}; fix the line, or set data.on_error: drop "
                "to drop malformed lines"
            ) from None
        dataset, loaded = load_jsonl_dropping(path, lambda good: hooks.load_dataset({**spec, "path": good}))
    if path.is_file() and one_object_of_lists(path, dataset):
        raise DataError(
            f"{where}.path: {path} holds one JSON object of lists (keys: {', '.join(dataset.column_names)}), which "
            "reads as a single row; write one JSON object a row (JSON Lines, or a JSON array of objects)"
        )
    if split.columns:
        missing = [c for c in split.columns if c not in dataset.column_names]
        if missing:
            raise DataError(
                f"{where}.columns: the dataset has no column {', '.join(repr(m) for m in missing)} to rename "
                f"(columns: {', '.join(dataset.column_names)})"
            )
        dataset = dataset.rename_columns(split.columns)
    if split.max_rows is not None and split.max_rows < len(dataset):
        dataset = dataset.select(range(split.max_rows))
    return LoadedSplit(dataset, loaded if loaded and loaded["malformed_lines"] else None)


def builtin_dataset_loader(hooks) -> bool:
    """Whether data files are read by the built-in loader alone (no plugin implements
    ``trl_plus_load_dataset``, which may read formats of its own). ``hooks``: a
    ``trl_plus.Hooks`` or its pluggy manager."""
    pm = getattr(hooks, "pm", hooks)
    impls = pm.hook.trl_plus_load_dataset.get_hookimpls()
    return all(impl.function.__module__ == BUILTIN_LOADER for impl in impls)


def data_file_check(path, on_error: str, hooks) -> str | None:
    """What the built-in loader would refuse in the local data file ``path``, found at
    start-up without loading it (:func:`trl_plus.data.files.data_file_problem`): an unknown
    suffix, an empty file, a CSV header naming a column twice, a line that is not UTF-8.
    None when there is nothing to say, or when a plugin loads datasets."""
    if not builtin_dataset_loader(hooks):
        return None
    return data_file_problem(path, on_error)


def require_columns(dataset, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        # A header written "prompt, chosen" makes a column " chosen": say so.
        near = {m: c for m in missing for c in dataset.column_names if c != m and c.strip().lower() == m}
        hint = "".join(f"; column {c!r} has spaces or capitals around the name {m!r}" for m, c in near.items())
        raise DataError(
            f"{where}: the dataset has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(dataset.column_names)}){hint}; rename with {where}.columns"
        )
