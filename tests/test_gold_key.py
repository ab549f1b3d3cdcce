"""A pipeline recipe names its gold reward under ``gold:``; the old key, ``rewards:``, is
still read, with a one-line warning naming both; both at once is an error naming both."""

from __future__ import annotations

import logging

import pytest
import yaml

from trl_plus.cli import main
from trl_plus.errors import RecipeError
from trl_plus.pipeline.config import parse
from trl_plus.recipe import load_recipe, shipped_recipes

QUICKSTART = shipped_recipes()["quickstart"]


def _recipe(tmp_path, edit) -> str:
    raw = yaml.safe_load(QUICKSTART.read_text())
    edit(raw)
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _renamed(raw: dict) -> None:
    raw["rewards"] = raw.pop("gold")


def test_shipped_pipeline_recipes_use_gold():
    for name in ("quickstart", "imdb-sentiment-compare"):
        raw = yaml.safe_load(shipped_recipes()[name].read_text())
        assert "gold" in raw and "rewards" not in raw, name


def test_gold_is_what_the_pipeline_reads(caplog):
    with caplog.at_level(logging.WARNING, logger="trl_plus"):
        config = parse(load_recipe("quickstart"))
    assert config.gold[0]["function"] == "trl_plus.pipeline.corpus:gold_reward" and config.gold_key == "gold"
    assert "rewards" not in caplog.text


def test_the_old_key_is_read_with_a_one_line_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="trl_plus"):
        recipe = load_recipe(_recipe(tmp_path, _renamed))
    config = parse(recipe)
    assert config.gold == parse(load_recipe("quickstart")).gold and config.gold_key == "rewards"
    warned = [r.getMessage() for r in caplog.records if "gold" in r.getMessage()]
    assert len(warned) == 1 and "rewards:" in warned[0] and "gold:" in warned[0] and "\n" not in warned[0]


def test_both_keys_are_an_error_naming_both(tmp_path, capsys):
    path = _recipe(tmp_path, lambda raw: raw.update(rewards=list(raw["gold"])))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert err.value.key == "rewards" and "gold:" in str(err.value) and "rewards:" in str(err.value)
    assert main(["validate", path]) == 2
    assert "error: rewards:" in capsys.readouterr().err


def test_a_pipeline_without_a_gold_reward_is_refused(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe(tmp_path, lambda raw: raw.pop("gold")))
    assert err.value.key == "gold" and "gold reward" in str(err.value)


def test_gold_problems_are_named_under_gold(capsys):
    assert main(["validate", "quickstart", "--set", "gold.0.function=no_such_module_xyz:score",
                 "--set", "gold.0.weight=heavy"]) == 2
    err = capsys.readouterr().err
    assert "gold[0].weight: Input should be a valid number" in err, err
    assert main(["validate", "quickstart", "--set", "gold.0.function=no_such_module_xyz:score"]) == 2
    assert "gold[0].function: cannot import 'no_such_module_xyz'" in capsys.readouterr().err


def test_gold_is_a_pipeline_key(capsys):
    assert main(["validate", "tiny-dpo", "--set", "gold=[{name: python, function: math:sqrt}]"]) == 2
    err = capsys.readouterr().err
    assert "error: gold: is the gold reward of a pipeline recipe" in err and "under rewards" in err, err


def test_gold_references_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "judge.py").write_text("def score(prompts, completions, **kw):\n    return [0.0] * len(completions)\n")
    path = _recipe(tmp_path, lambda raw: raw.update(gold=[{"name": "python", "function": "judge.py:score"}]))
    monkeypatch.chdir("/")
    recipe = load_recipe(path)
    assert recipe.raw["gold"][0]["function"] == f"{tmp_path / 'judge.py'}:score"
