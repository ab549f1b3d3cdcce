"""Recipes: shipped ones validate; broken ones exit 2 with a message naming the key."""

import pytest
import yaml

from trl_plus.cli import main
from trl_plus.errors import RecipeError
from trl_plus.recipe import apply_override, load_recipe, shipped_recipes


# Recipes on hub models whose start-up checks need them (a pipeline's models, a reward model)
# fail `validate` offline with nothing cached:
# tests/test_standard_recipes.py validates those without the hub.
NEEDS_HUB = {"imdb-sentiment-compare", "ppo-tldr-pythia-1b", "imdb-sentiment-arms", "tldr-ppo-rloo-dpo"}


@pytest.mark.parametrize("name", sorted(set(shipped_recipes()) - NEEDS_HUB))
def test_every_shipped_recipe_validates(name, capsys):
    assert main(["validate", name]) == 0
    assert "ok" in capsys.readouterr().out


def write(tmp_path, recipe: dict):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def base(tmp_path):
    data = tmp_path / "prefs.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    return {
        "trainer": "dpo",
        "model": {"name_or_path": "tiny:causal-lm"},
        "data": {"train": {"path": "prefs.jsonl"}},  # relative to the recipe file
        "dpo": {"beta": 0.1, "max_steps": 2},
    }


def test_relative_data_path_resolves_against_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    recipe = load_recipe(write(tmp_path, base(tmp_path)))
    assert recipe.data.train.path == str(tmp_path / "prefs.jsonl")


@pytest.mark.parametrize(
    "change, key, words",
    [
        (lambda r: r.update(optimiser="adam"), "optimiser", ["unknown key", "Allowed"]),
        (lambda r: r["model"].update(nme="x"), "model.nme", ["unknown key", "name_or_path"]),
        (lambda r: r["dpo"].update(max_steps="many"), "dpo.max_steps", ["expected int", "'many'"]),
        (lambda r: r["dpo"].update(beta=-1), "dpo.beta", ["> 0", "-1"]),
        (lambda r: r["dpo"].update(bta=0.1), "dpo.bta", ["Did you mean: beta"]),
        (lambda r: r.update(trainer="sft"), "trainer", ["'dpo'", "'ppo'"]),
        (lambda r: r.update(kl={"name": "adaptiv"}), "kl", ["Did you mean: adaptive"]),
        (lambda r: r.update(filters=[{"name": "dedupe"}]), "filters[0]", ["Did you mean: dedup"]),
        (lambda r: r.update(rewards=[{"name": "python"}]), "rewards[0]", ["needs 'function'"]),
        (lambda r: r["data"]["train"].update(path="missing.jsonl"), "data.train.path", ["file not found"]),
        (lambda r: r.pop("model"), "model", ["missing"]),
        (lambda r: r["model"].update(name_or_path="tiny:causal"), "model.name_or_path", ["tiny:causal-lm"]),
        (lambda r: r["model"].update(ref_model="./no/such/folder"), "model.ref_model", ["no such model folder"]),
        (lambda r: r.update(ppo={"kl_coef": 0.1}), "ppo", ["trainer is 'dpo'"]),
    ],
)
def test_broken_recipe_exits_2_naming_the_key(tmp_path, capsys, change, key, words):
    recipe = base(tmp_path)
    change(recipe)
    assert main(["validate", write(tmp_path, recipe)]) == 2
    err = capsys.readouterr().err
    assert f"error: {key}:" in err, err
    assert all(w in err for w in words), err
    assert "Traceback" not in err


def test_unknown_recipe_name_suggests(capsys):
    assert main(["validate", "tiny-dpo.yml"]) == 2
    assert "Did you mean: tiny-dpo?" in capsys.readouterr().err


def test_not_yaml_mapping(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("- just\n- a list\n")
    assert main(["validate", str(path)]) == 2
    assert "mapping" in capsys.readouterr().err


def test_safe_load_refuses_python_tags(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("trainer: !!python/object/apply:os.system ['echo pwned']\n")
    assert main(["validate", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_overrides_set_nested_keys_and_list_items():
    raw = {"dpo": {"beta": 0.1}, "filters": [{"name": "dedup"}]}
    apply_override(raw, "dpo.beta=0.05")
    apply_override(raw, "filters.0.normalize=true")
    apply_override(raw, "filters.1.name=distinct_pair")
    apply_override(raw, "kl.name=constant")
    assert raw == {
        "dpo": {"beta": 0.05},
        "filters": [{"name": "dedup", "normalize": True}, {"name": "distinct_pair"}],
        "kl": {"name": "constant"},
    }
    with pytest.raises(RecipeError, match="out of range"):
        apply_override(raw, "filters.5.name=x")


def test_override_from_cli(capsys):
    assert main(["validate", "tiny-dpo", "--set", "dpo.beta=-2"]) == 2
    assert "dpo.beta" in capsys.readouterr().err


def test_recipe_loaded_hook_fires(plugin_manager, register_plugin):
    import trl_plus

    seen = []

    class Watch:
        @trl_plus.hookimpl
        def trl_plus_recipe_loaded(self, recipe):
            seen.append(recipe.trainer)

    register_plugin(Watch())
    load_recipe("tiny-dpo", hooks=plugin_manager)
    assert seen == ["dpo"]


def test_eval_section_is_validated(capsys):
    assert main(["validate", "tiny-dpo", "--set", "eval.judgs=[reward_model]"]) == 2
    err = capsys.readouterr().err
    assert "eval" in err and "judgs" in err
