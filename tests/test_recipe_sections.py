"""Sections and trainer kinds a plugin registers are part of the recipe like the core's:
their keys are allowed, their checks run at load, their declared paths are re-based, and a
registered trainer kind is a valid ``trainer:`` with its config checked field by field."""

from __future__ import annotations

import dataclasses

import pytest

import trl_plus
from trl_plus.errors import RecipeError
from trl_plus.protocols import RecipeSection, TrainerKind
from trl_plus.recipe import validate_dict


def trainer_recipe(tmp_path, **extra) -> dict:
    (tmp_path / "prefs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    return {"trainer": "dpo", "model": {"name_or_path": "tiny:causal-lm"}, "data": {"train": "prefs.jsonl"},
            "dpo": {"max_steps": 1}, **extra}


@dataclasses.dataclass
class ToyConfig:
    output_dir: str = "out"
    learning_rate: float = 1e-3
    rounds: int = 1


class Toy:
    @trl_plus.hookimpl
    def trl_plus_register_trainer_kinds(self, register):
        register.add("toy", TrainerKind("toy", "prompts", lambda: (object, ToyConfig), "a toy trainer"))


class Notes:
    """A section ``notes:`` with a file path and a check of its own."""

    seen: list = []

    @trl_plus.hookimpl
    def trl_plus_register_recipe_sections(self, register):
        def check(recipe, hooks, problems, deep=False):
            section = recipe.raw["notes"]
            if not isinstance(section.get("pages"), int):
                problems.add("notes.pages", "expected a number of pages")
            Notes.seen.append(deep)
            return {"pages": section.get("pages")}

        register.add("notes", RecipeSection("notes", check, file_keys=("file",), data_keys=("extra.*",)))


def test_a_plugin_section_is_checked_and_its_paths_rebased(tmp_path, plugin_manager, register_plugin):
    register_plugin(Notes())
    raw = trainer_recipe(tmp_path, notes={"file": "notes.txt", "pages": 3, "extra": {"a": "a.jsonl"}})
    recipe = validate_dict(raw, plugin_manager, source=tmp_path / "recipe.yaml", deep=True)
    assert recipe.raw["notes"]["file"] == str(tmp_path / "notes.txt")
    assert recipe.raw["notes"]["extra"]["a"] == str(tmp_path / "a.jsonl")
    assert recipe.parsed["notes"] == {"pages": 3} and Notes.seen[-1] is True
    with pytest.raises(RecipeError) as err:
        validate_dict({**raw, "notes": {"pages": "many"}}, plugin_manager, source=tmp_path / "recipe.yaml")
    assert err.value.key == "notes.pages"


def test_an_unregistered_section_is_an_unknown_key(tmp_path, plugin_manager):
    with pytest.raises(RecipeError) as err:
        validate_dict(trainer_recipe(tmp_path, notes={"pages": 1}), plugin_manager, source=tmp_path / "recipe.yaml")
    assert err.value.key == "notes" and "unknown key 'notes'" in str(err.value)
    assert "stages" in str(err.value) and "eval" in str(err.value)  # the built-in plugins' sections are allowed


def test_an_unknown_trainer_lists_the_registered_kinds(tmp_path, plugin_manager, register_plugin):
    raw = trainer_recipe(tmp_path, trainer="sft")
    with pytest.raises(RecipeError) as err:
        validate_dict(raw, plugin_manager, source=tmp_path / "recipe.yaml")
    assert err.value.key == "trainer" and str(err.value) == "trainer: Input should be 'dpo', 'grpo', 'online_dpo', 'ppo' or 'rloo' (got 'sft')"
    register_plugin(Toy())
    with pytest.raises(RecipeError) as err:
        validate_dict(raw, plugin_manager, source=tmp_path / "recipe.yaml")
    assert "'toy'" in str(err.value) and "'dpo'" in str(err.value)


def test_a_third_party_trainer_kind_has_its_section_checked(tmp_path, plugin_manager, register_plugin):
    register_plugin(Toy())
    raw = {**trainer_recipe(tmp_path, trainer="toy", toy={"learning_rate": -1, "roundz": 2}), "dpo": {}}
    with pytest.raises(RecipeError) as err:
        validate_dict(raw, plugin_manager, source=tmp_path / "recipe.yaml")
    problems = dict(err.value.problems)
    assert problems["toy.learning_rate"] == "must be a number > 0, got -1"
    assert "unknown ToyConfig field 'roundz'. Did you mean: rounds?" == problems["toy.roundz"]
    recipe = validate_dict({**raw, "toy": {"rounds": 3}}, plugin_manager, source=tmp_path / "recipe.yaml")
    assert recipe.trainer_args == {"rounds": 3}
    with pytest.raises(RecipeError, match="section 'dpo' is for trainer 'dpo', but trainer is 'toy'"):
        validate_dict({**raw, "toy": {}, "dpo": {"beta": 0.1}}, plugin_manager, source=tmp_path / "recipe.yaml")
