"""Everything around TRL's own preparation of one dataset split: before it tokenises, the
row checks, the chat-template check, the data filters and the split's entry of the
filter report; after, the filters that judge rows by TRL's token counts.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .report import FILTER_REPORT, write_filter_report
from .rows import ON_ERROR, DataOptions, check_chat_template, check_rows


def prepare_dataset(dataset, columns, name: str, chain=None, *, options: DataOptions = DataOptions(),
                    processing_class=None, reports: dict | None = None, output_dir: str | None = None,
                    load_report: dict | None = None):
    """Check, filter and report one dataset split before TRL tokenises it.

    ``reports[name]`` gets the split's entry of ``filter_report.json``: ``rows_in``,
    ``rows_out``, ``checks`` (malformed lines dropped at loading, invalid rows, empty
    strings) and ``filters`` (what each filter dropped). When nothing is left, the report
    is written to ``output_dir`` first and the error says where. ``load_report`` is what
    loading the split dropped (the report :func:`trl_plus.data.splits.load_split` returns
    with the dataset), counted in ``checks``.
    """
    from datasets import Dataset

    if not isinstance(dataset, Dataset) or "input_ids" in dataset.column_names:
        return dataset
    if options.on_error not in ON_ERROR:
        raise DataError(f"data.on_error must be one of {', '.join(ON_ERROR)}, got {options.on_error!r}")
    loaded = load_report if load_report and load_report.get("malformed_lines") else None
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
