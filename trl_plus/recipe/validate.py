"""The whole-recipe check: read, override, re-base paths, validate every section (the
core's here, a plugin's through its ``RecipeSection.check``), build every component as a
dry run; one :class:`RecipeProblems` lists everything wrong, before any model loads."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import RecipeError
from .checks import check_components, check_data, check_models
from .expansion import check_expansion, data_items, written_out
from .loaded import Recipe
from .paths import CORE_PATHS, at, resolve_paths, trainer_paths
from .problems import Problems
from .schema import RecipeModel, recipe_model
from .sources import apply_override, find_recipe
from .trainer_config import check_critic_init, check_trainer_section
from .yaml_text import read_yaml


def _validate_sections(model: type[RecipeModel], raw: dict, problems: Problems) -> RecipeModel:
    """The typed recipe; a top-level section pydantic rejects is reported and left out,
    so that the other sections are still checked."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.add_validation(exc, model)
        bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
    try:
        return model.model_validate({k: v for k, v in raw.items() if k not in bad})
    except ValidationError:
        return model()


def _check_sections(recipe: Recipe, sections: dict, hooks, problems: Problems, deep: bool) -> None:
    """Each plugin section the recipe has, by its own check, unless a section present
    claims it (the pipeline's ``stages:`` checks ``eval:`` as its eval stage runs it)."""
    present = {key: section for key, section in sections.items() if recipe.raw.get(key)}
    claimed = {key for section in present.values() for key in section.claims}
    for key, section in present.items():
        if section.check is None or key in claimed or problems.under(key):
            continue
        with problems.check():
            parsed = section.check(recipe, hooks, problems, deep)
            if parsed is not None:
                recipe.parsed[key] = parsed


def validate_dict(raw: Any, hooks=None, source: Path | None = None, overrides: list[str] = (), deep: bool = False) -> Recipe:
    """Validate a recipe mapping completely; raises one :class:`RecipeProblems` (a
    ``RecipeError``) listing every problem, each under its key path, before any model loads.

    :param deep: also check what a plugin section points to (a pipeline's prompt files,
        datasets, benchmark tasks), as ``trl-plus validate`` does.
    """
    from ..manager import Hooks

    if not isinstance(raw, dict):
        raise RecipeError(f"a recipe is a mapping of keys, got {type(raw).__name__}")
    check_expansion(raw, data_items)  # a mapping built in Python, or read by other means
    raw = written_out(raw)
    hooks = Hooks.of(hooks)
    kinds, sections = hooks.trainer_kinds, hooks.recipe_sections
    declared = CORE_PATHS + tuple(trainer_paths(kind) for kind in kinds) + tuple(sections.values())
    base = source.parent if source else Path.cwd()
    written = copy.deepcopy(raw)  # as written, for messages that say where a path was looked up
    resolve_paths(raw, base, declared)
    before = raw
    if overrides:
        # A value typed on the command line is a command-line path: it resolves against the
        # working directory, whichever folder the recipe lives in (a shipped recipe's is
        # inside the installed package).
        before = copy.deepcopy(raw)
        for text in overrides:
            apply_override(raw, text)
            apply_override(written, text)
        resolve_paths(raw, Path.cwd(), declared, only=lambda loc: at(raw, loc) != at(before, loc))
    from_cli = lambda loc: at(raw, loc) != at(before, loc)  # noqa: E731
    problems = Problems()
    spec = _validate_sections(recipe_model(tuple(kinds), tuple(sections)), raw, problems)
    standalone = any(section.standalone for key, section in sections.items() if raw.get(key))
    if not standalone:
        for key in ("trainer", "model", "data"):
            if getattr(spec, key) is None and not problems.under(key):
                problems.add(key, "missing required key")
    if spec.model is not None:
        check_models(spec, problems)
    if spec.data is not None:
        check_data(spec, written, base, from_cli, problems, hooks)
    if spec.trainer is not None:
        check_trainer_section(spec, hooks, problems)
        check_critic_init(spec, problems)
    check_components(spec, hooks, problems, standalone)
    recipe = Recipe(spec, raw, source)
    _check_sections(recipe, sections, hooks, problems, deep)
    problems.raise_if_any()
    return recipe


def load_recipe(name_or_path: str | Path, overrides: list[str] = (), hooks=None, deep: bool = False) -> Recipe:
    """Find, read (:func:`read_yaml`: plain data), override and validate a recipe (see
    :func:`validate_dict`); calls ``recipe_loaded``."""
    from ..manager import Hooks

    path = find_recipe(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not a recipe: not UTF-8 text (byte {exc.start}); a recipe is a YAML file") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe: {exc.strerror or exc}") from None
    raw = read_yaml(text, path)
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty (no keys, or only comments); start from a shipped recipe, "
                          "e.g. trl-plus validate tiny-dpo")
    hooks = Hooks.of(hooks)
    recipe = validate_dict(raw, hooks, source=path.resolve(), overrides=list(overrides), deep=deep)
    hooks.recipe_loaded(recipe)
    return recipe
