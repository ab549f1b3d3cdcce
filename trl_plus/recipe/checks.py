"""What the core's sections point to, checked at load without loading a model: model names,
data files (there, and readable as the loader will read them), and every component the
recipe names, built as a dry run."""

from __future__ import annotations

from pathlib import Path

from .paths import MISSING, at
from .problems import Problems


def _looks_like_file(path: str) -> bool:
    from ..data.files import file_format

    return file_format(path) is not None or path.startswith(("/", "./", "../"))


def check_models(spec, problems: Problems) -> None:
    """``model.*`` names: a ``tiny:`` name that exists, a local folder that is there."""
    from ..model_refs import check_model_name

    for key in ("name_or_path", "tokenizer", "ref_model"):
        if getattr(spec.model, key):
            with problems.check(f"model.{key}"):
                check_model_name(getattr(spec.model, key), f"model.{key}")


def check_data(spec, written: dict, base: Path, from_cli, problems: Problems, hooks) -> None:
    """Data files exist; a missing one is named as written and as resolved, and where
    a relative path was looked up (:param from_cli: ``from_cli(location)``: given by ``--set``).
    One that exists is checked as the loader will read it (``trl_plus.data.splits.data_file_check``)."""
    from ..data.splits import data_file_check

    for split in ("train", "eval"):
        entry = getattr(spec.data, split)
        if entry is not None and Path(entry.path).is_file():
            problem = data_file_check(entry.path, spec.data.on_error, hooks)
            if problem:
                problems.add(f"data.{split}.path", problem)
        if entry is None or not _looks_like_file(entry.path) or Path(entry.path).exists():
            continue
        loc = ("data", split, "path")
        given = at(written, loc)
        if given is MISSING:  # written as a bare string, ``train: file.jsonl``
            given = at(written, loc[:2])
        how = ""
        if isinstance(given, str) and not Path(given).expanduser().is_absolute():
            how = (f" (--set gave {given!r}; a relative path on the command line resolves against the working "
                   f"directory, {Path.cwd()})" if from_cli(loc) else
                   f" (the recipe says {given!r}; a relative path in a recipe resolves against the recipe's "
                   f"folder, {base})")
        problems.add(f"data.{split}.path", f"file not found: {entry.path}{how}")


def check_components(spec, hooks, problems: Problems, standalone: bool) -> None:
    """Build every component the recipe names, as a dry run: nothing loads a model.

    :param standalone: the recipe is run by a standalone section (a pipeline), not by
        one trainer: rollout filters are then the stages' business.
    """
    from ..components import Components

    components = Components(hooks, problems)
    components.reward_mix([r.model_dump() for r in spec.rewards])
    if spec.kl is not None:
        components.kl_schedule(spec.kl.model_dump())
    for key in ("filters", "rollout_filters"):
        components.filter_chain([f.model_dump() for f in getattr(spec, key)], key)
    rollouts = [name for name, kind in hooks.trainer_kinds.items() if kind.consumes == "prompts"]
    if spec.rollout_filters and spec.trainer not in rollouts and not standalone:
        problems.add("rollout_filters", f"rollout filters apply to trainer {' or '.join(map(repr, rollouts))} only")
