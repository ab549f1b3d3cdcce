"""The table of trainer kinds: a third party adds one through the registration hook, and
``trl-plus train`` trains it from a recipe like the built-in ones; ``trl-plus plugins``
lists the kinds."""

import dataclasses
import json

import pytest
import yaml

import trl_plus
from trl_plus.cli import main
from trl_plus.recipe import shipped_recipes

KIND = "dpo-copy"


class DPOCopyTrainer(trl_plus.DPOTrainer):
    """The toy kind's trainer: trl-plus's DPO, remembering that it was built."""

    built: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        DPOCopyTrainer.built.append(self)


def _load():
    return DPOCopyTrainer, trl_plus.DPOConfig


class DPOCopyPlugin:
    """A third party's plugin: one trainer kind, DPO's pieces with its own trainer class."""

    @trl_plus.hookimpl
    def trl_plus_register_trainer_kinds(self, register):
        from trl_plus.trainers.kinds import DPO

        register.add(KIND, dataclasses.replace(DPO, name=KIND, load=_load, description="DPO, copied"))


def _recipe(tmp_path, **section) -> dict:
    data = shipped_recipes()["tiny-dpo"].parent / "data" / "tiny_prefs.jsonl"
    args = {"max_steps": 2, "per_device_train_batch_size": 8, "max_length": 64, "logging_steps": 1,
            "save_strategy": "no", "disable_tqdm": True, **section}
    return {"trainer": KIND, "model": {"name_or_path": "tiny:causal-lm"}, "data": {"train": {"path": str(data)}},
            KIND: args}


@pytest.fixture
def with_dpo_copy(register_plugin, plugin_manager):
    DPOCopyTrainer.built.clear()
    register_plugin(DPOCopyPlugin(), name="dpo_copy")
    return plugin_manager


def test_the_builtin_kinds_are_the_table(plugin_manager):
    kinds = plugin_manager.trainer_kinds
    assert {"dpo", "ppo"} <= set(kinds)
    assert kinds["dpo"].consumes == "pairs" and kinds["ppo"].consumes == "prompts"
    assert kinds["dpo"].trainer_class is trl_plus.DPOTrainer and kinds["dpo"].config_class is trl_plus.DPOConfig
    assert kinds["ppo"].trainer_class is trl_plus.PPOTrainer and kinds["ppo"].config_class is trl_plus.PPOConfig


def test_plugins_lists_the_builtin_trainer_kinds(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    kinds = {name for row in rows for name in row["components"].get("trainer_kinds", [])}
    assert {"dpo", "ppo"} <= kinds
    assert main(["plugins"]) == 0
    assert "trainer kinds: dpo, grpo, online_dpo, ppo, rloo" in capsys.readouterr().out


def test_a_third_party_kind_is_registered(with_dpo_copy):
    kind = with_dpo_copy.trainer_kinds[KIND]
    assert kind.trainer_class is DPOCopyTrainer and kind.consumes == "pairs"
    assert kind.columns == ("chosen", "rejected")


def test_train_trains_a_third_party_kind_from_its_recipe(tmp_path, with_dpo_copy, one_thread):
    from trl_plus.recipe import validate_dict
    from trl_plus.trainers.from_recipe import train_from_recipe  # what `trl-plus train` calls

    recipe = validate_dict(_recipe(tmp_path, beta=0.2), with_dpo_copy)
    out = tmp_path / "run"
    trainer = train_from_recipe(recipe, str(out), hooks=with_dpo_copy)
    assert isinstance(trainer, DPOCopyTrainer) and DPOCopyTrainer.built == [trainer]
    assert trainer.args.beta == 0.2 and trainer.state.global_step == 2
    assert json.loads((out / "run_info.json").read_text())["trainer"] == KIND
    assert (out / "model.safetensors").exists() and (out / "filter_report.json").exists()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["trainer"] == KIND


def test_the_cli_trains_a_third_party_kind(tmp_path, capsys, monkeypatch, one_thread):
    """As an installed plugin would be: every plugin manager the CLI builds has it."""
    from trl_plus import manager

    real = manager.get_plugin_manager

    def with_plugin(*args, **kwargs):
        pm = real(*args, **kwargs)
        pm.register(DPOCopyPlugin(), name="dpo_copy")
        return pm

    monkeypatch.setattr(manager, "get_plugin_manager", with_plugin)
    DPOCopyTrainer.built.clear()
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(_recipe(tmp_path)))
    out = tmp_path / "run"
    assert main(["train", str(path), "--output-dir", str(out)]) == 0, capsys.readouterr().err
    assert len(DPOCopyTrainer.built) == 1 and DPOCopyTrainer.built[0].state.global_step == 2
    assert json.loads((out / "run_info.json").read_text())["trainer"] == KIND


def test_the_third_party_kinds_section_is_validated(tmp_path, with_dpo_copy):
    from trl_plus.errors import RecipeError
    from trl_plus.recipe import validate_dict

    with pytest.raises(RecipeError) as caught:
        validate_dict(_recipe(tmp_path, betaa=0.2), with_dpo_copy)
    message = str(caught.value)
    assert f"{KIND}.betaa" in message and "unknown DPOConfig field 'betaa'" in message and "beta" in message
    with pytest.raises(RecipeError, match=f"{KIND}.beta"):
        validate_dict(_recipe(tmp_path, beta=-1), with_dpo_copy)
    # the other kinds' sections are not this one's
    with pytest.raises(RecipeError, match="section 'dpo' is for trainer 'dpo'"):
        validate_dict({**_recipe(tmp_path), "dpo": {"beta": 0.1}}, with_dpo_copy)


def test_an_unknown_trainer_names_the_kinds(tmp_path, with_dpo_copy):
    from trl_plus.errors import RecipeError
    from trl_plus.recipe import validate_dict

    raw = _recipe(tmp_path)
    raw["trainer"] = "dpo-copi"
    with pytest.raises(RecipeError, match=KIND):
        validate_dict(raw, with_dpo_copy)
