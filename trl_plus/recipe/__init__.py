"""Recipes: YAML files for alignment runs, validated completely before anything heavy.

Keys: ``trainer``, ``model``, ``data``, one section per trainer kind named after it
(``dpo``, ``ppo``: any field of that trainer's config; the kinds are
``Hooks.trainer_kinds``), ``peft`` (LoRA), ``rewards``, ``kl``, ``filters``,
``rollout_filters``, and the sections plugins register (``Hooks.recipe_sections``: the
pipeline's ``stages``, ``gold``, ``report`` and ``launcher``, the evaluation's ``eval``).
Errors name the key path (``dpo.beta``), show the value and list what is allowed.

Paths: a relative path written in a recipe (data files, prompt sets, model folders,
``file.py:attr`` references) resolves against the recipe's own folder; a relative path
given with ``--set`` resolves against the working directory, like every other path on
the command line. Both are made absolute when the recipe loads, so nothing downstream
re-bases them.

One module a concern: :mod:`.schema` (the strict base model and the core's sections),
:mod:`.problems` (pydantic's errors in words, and the collector of problems),
:mod:`.sources` (shipped recipes, ``--set``), :mod:`.yaml_text` and :mod:`.expansion`
(reading YAML safely), :mod:`.paths` (re-basing declared path keys),
:mod:`.trainer_values` and :mod:`.trainer_config` (the trainer's section), :mod:`.checks`
(what the core's sections point to), :mod:`.validate` (the whole recipe).
This package imports no trainer, pipeline or evaluation module.
"""

from .checks import check_components, check_data, check_models
from .expansion import MAX_RECIPE_VALUES, check_expansion, data_items, expanded_sizes, written_out
from .loaded import Recipe
from .paths import CORE_PATHS, at, resolve_paths, trainer_paths
from .problems import Problems, fields_at, format_loc, pydantic_problems, unknown_key
from .schema import (
    ComponentSpec,
    DataSection,
    DataSplit,
    ModelSection,
    PeftSection,
    RecipeModel,
    RewardSpec,
    Strict,
    recipe_model,
)
from .sources import apply_override, find_recipe, parse_override, shipped_recipes
from .trainer_config import CRITIC_INIT_WORDS, build_trainer_config, check_trainer_section, trainer_config_class
from .trainer_values import non_finite, out_of_range, trainer_value_problems, type_hints
from .validate import load_recipe, validate_dict
from .yaml_text import RecipeLoader, load_yaml, read_yaml

__all__ = [
    "CORE_PATHS", "CRITIC_INIT_WORDS", "MAX_RECIPE_VALUES", "ComponentSpec", "DataSection", "DataSplit",
    "ModelSection", "PeftSection", "Problems", "Recipe", "RecipeLoader", "RecipeModel", "RewardSpec", "Strict",
    "apply_override", "at", "build_trainer_config", "check_components", "check_data", "check_expansion",
    "check_models", "check_trainer_section", "data_items", "expanded_sizes", "fields_at", "find_recipe",
    "format_loc", "load_recipe", "load_yaml", "non_finite", "out_of_range", "parse_override", "pydantic_problems",
    "read_yaml", "recipe_model", "resolve_paths", "shipped_recipes", "trainer_config_class", "trainer_paths",
    "trainer_value_problems", "type_hints", "unknown_key", "validate_dict", "written_out",
]
