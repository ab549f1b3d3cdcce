"""What a recipe may say and how it is read: every value checked (finite floats, component
keywords against their factory's annotations, what YAML 1.1 makes of `1e-3` and `no`),
duplicate keys and alias bombs refused when the YAML is read, a misspelt blocked plugin
named, and `validate --no-import` checking python references without running them."""

import logging
import shutil
import time

import pytest
import yaml

from trl_plus.cli import main
from trl_plus.errors import RecipeError
from trl_plus.recipe import MAX_RECIPE_VALUES, load_recipe, read_yaml, shipped_recipes

SHIPPED = shipped_recipes()


def copy_shipped(tmp_path, name: str) -> str:
    """A shipped recipe in a folder of its own, with its data and reward module."""
    src = SHIPPED[name]
    shutil.copytree(src.parent / "data", tmp_path / "data")
    shutil.copy(src.parent / "toy_rewards.py", tmp_path / "toy_rewards.py")
    path = tmp_path / f"{name}.yaml"
    path.write_text(src.read_text())
    return str(path)


def edited(tmp_path, name: str, old: str, new: str) -> str:
    """A copy of a shipped recipe with one line of its text replaced (as a user edits it)."""
    path = copy_shipped(tmp_path, name)
    text = open(path).read()
    assert old in text, old
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))
    return path


def validate(capsys, *args) -> tuple[int, str]:
    code = main(["validate", *args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.err + out.out


# ---------------------------------------------------------------------------------------
# case 5: every float in a trainer config is finite
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, old, new, key, shown", [
    ("tiny-dpo", "learning_rate: 1.0e-3", "learning_rate: .inf", "dpo.learning_rate", "got inf"),
    ("tiny-ppo", "vf_coef: 0.1", "vf_coef: .nan", "ppo.vf_coef", "got nan"),
    ("tiny-ppo", "critic_learning_rate: 3.0e-3", "critic_learning_rate: -.inf", "ppo.critic_learning_rate", "got -inf"),
    ("tiny-dpo", "seed: 0", "seed: 0\n  lr_scheduler_kwargs: {eta_min: .nan}", "dpo.lr_scheduler_kwargs.eta_min",
     "got nan"),
])
def test_non_finite_trainer_values_are_refused(tmp_path, capsys, name, old, new, key, shown):
    code, err = validate(capsys, edited(tmp_path, name, old, new))
    assert code == 2
    assert f"error: {key}: must be a finite number, {shown}" in err, err


def test_non_finite_stage_args_and_sweeps_are_refused(capsys):
    code, err = validate(capsys, "quickstart", "--set", "stages.sft.args.learning_rate=.inf",
                         "--set", "stages.dpo.args.max_grad_norm=.nan", "--set", "stages.dpo.betas=[.inf]")
    assert code == 2
    assert "stages.sft.args.learning_rate: must be a finite number, got inf" in err, err
    assert "stages.dpo.args.max_grad_norm: must be a finite number, got nan" in err, err
    assert "stages.dpo.betas.0: Input should be a finite number (got inf)" in err, err


def test_non_finite_component_and_core_values_are_refused(tmp_path, capsys):
    path = copy_shipped(tmp_path, "tiny-ppo")
    code, err = validate(capsys, path, "--set", "kl.target=.inf", "--set", "rewards.0.weight=.nan")
    assert code == 2
    assert "kl.target: KL schedule 'adaptive': expected a finite number, got inf" in err, err
    assert "rewards[0].weight: Input should be a finite number (got nan)" in err, err


# ---------------------------------------------------------------------------------------
# messages: what YAML 1.1 made of 1e-3 and no
# ---------------------------------------------------------------------------------------

def test_exponent_without_decimal_point_says_how_to_write_it(tmp_path, capsys):
    code, err = validate(capsys, edited(tmp_path, "tiny-dpo", "learning_rate: 1.0e-3", "learning_rate: 1e-3"))
    assert code == 2
    assert "dpo.learning_rate: expected float, got '1e-3' (YAML 1.1 reads 1e-3 as a string" in err, err
    assert "write 1.0e-3" in err, err
    # a stage arg and a component keyword say the same; an integer is written as one
    code, err = validate(capsys, "quickstart", "--set", "stages.dpo.args.learning_rate=5e-4")
    assert "stages.dpo.args.learning_rate: expected float, got '5e-4'" in err and "write 5.0e-4" in err, err
    code, err = validate(capsys, "tiny-dpo", "--set", "filters.2.max_length=1e3")
    assert "filters[2].max_length: data filter 'length': expected an integer, got '1e3'" in err and "write 1000" in err


def test_unquoted_no_says_yaml_reads_false(tmp_path, capsys):
    code, err = validate(capsys, edited(tmp_path, "tiny-dpo", "save_strategy: steps ", "save_strategy: no "))
    assert code == 2
    assert "dpo.save_strategy: expected 'no' or 'steps' or 'epoch' or 'best', got False" in err, err
    assert "YAML 1.1 reads the unquoted words no, off, false as the boolean false: write \"no\" in quotes" in err, err
    code, err = validate(capsys, "tiny-dpo", "--set", "dpo.eval_strategy=off")
    assert "dpo.eval_strategy:" in err and "write \"no\" in quotes" in err, err


def test_quoted_numbers_and_words_say_to_drop_the_quotes(capsys):
    code, err = validate(capsys, "tiny-dpo", "--set", 'dpo.max_steps="30"', "--set", 'filters.1.normalize="false"')
    assert code == 2
    assert "dpo.max_steps: expected int, got '30' (a number in quotes is a string: write it without quotes)" in err
    assert "filters[1].normalize: data filter 'dedup': expected true or false, got 'false' (a word in quotes is a " \
           "string: write false without quotes)" in err, err


def test_missing_critic_init_folder_is_found_by_validate(tmp_path, capsys, monkeypatch):
    path = edited(tmp_path, "tiny-ppo", "critic_init: policy", "critic_init: ./critics/v1")
    monkeypatch.chdir("/")
    code, err = validate(capsys, path)
    assert code == 2
    assert f"ppo.critic_init: no such model folder: '{tmp_path}/critics/v1'" in err, err  # against the recipe's folder
    (tmp_path / "critics" / "v1").mkdir(parents=True)
    assert load_recipe(path).ppo["critic_init"] == str(tmp_path / "critics" / "v1")
    code, err = validate(capsys, path, "--set", "ppo.critic_init=reward")  # no reward model to start from
    assert code == 2 and "ppo.critic_init: critic_init 'reward' starts the critic from the recipe's reward model" in err


# ---------------------------------------------------------------------------------------
# case 6: component keywords checked against the factory's annotations
# ---------------------------------------------------------------------------------------

def test_component_values_are_checked_against_annotations(tmp_path, capsys):
    path = edited(tmp_path, "tiny-dpo", "  - name: dedup\n", '  - {name: dedup, normalize: "false"}\n')
    text = open(path).read().replace("max_prompt_tokens: 32", "max_prompt_tokens: [32]")
    open(path, "w").write(text)
    code, err = validate(capsys, path)
    assert code == 2
    assert "filters[1].normalize: data filter 'dedup': expected true or false, got 'false'" in err, err
    assert "filters[2].max_prompt_tokens: data filter 'length': expected an integer, got [32]" in err, err


@pytest.mark.parametrize("setting, key, words", [
    ("kl.horizon=2.5", "kl.horizon", "expected an integer, got 2.5"),
    ("kl.init=true", "kl.init", "expected a number, got True"),
    ("filters.1.columns=prompt", "filters[1].columns", "expected a list, got 'prompt'"),
    ("filters.1.columns=[prompt, 3]", "filters[1].columns[1]", "expected a string, got 3"),
    ("filters.2.max_length=[64]", "filters[2].max_length", "expected an integer, got [64]"),
])
def test_each_builtin_keyword_is_typed(capsys, setting, key, words):
    code, err = validate(capsys, "tiny-dpo" if not setting.startswith("kl.") else "tiny-ppo", "--set", setting)
    assert code == 2
    assert f"error: {key}: " in err and words in err, err


def test_component_values_are_checked_at_run_time_too(plugin_manager):
    components = plugin_manager.components()
    with pytest.raises(RecipeError, match=r"filters\[0\]\.normalize: data filter 'dedup': expected true or false"):
        components.filter_chain([{"name": "dedup", "normalize": "false"}])
    chain = components.filter_chain([{"name": "dedup", "normalize": False}])
    assert chain.mask({"prompt": ["a", "A", "a"], "chosen": ["x", "x", "x"]}) == [True, True, False]


def test_third_party_component_values_are_checked(plugin_manager, register_plugin):
    import trl_plus

    class Plugin:
        @trl_plus.hookimpl
        def trl_plus_register_data_filters(self, register):
            def keep_short(limit: int, labels: list[str] | None = None, anything=None, **extra: float):
                return lambda batch: [True] * len(next(iter(batch.values())))

            register.add("keep_short", keep_short)

    register_plugin(Plugin())
    components = plugin_manager.components()
    components.filter_chain([{"name": "keep_short", "limit": 3, "anything": {"x": "unchecked"}, "w": 1}])
    with pytest.raises(RecipeError) as info:
        components.filter_chain([{"name": "keep_short", "limit": "3", "labels": ["a", 1], "w": "x"}])
    text = str(info.value)
    assert "filters[0].limit: data filter 'keep_short': expected an integer, got '3'" in text, text
    assert "filters[0].labels[1]: data filter 'keep_short': expected a string, got 1" in text, text
    assert "filters[0].w: data filter 'keep_short': expected a number, got 'x'" in text, text


# ---------------------------------------------------------------------------------------
# case 11: alias bombs, and recipes that hold themselves
# ---------------------------------------------------------------------------------------

BOMB = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]'] + [
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]  # 10^9 values written out


def test_alias_bomb_in_component_kwargs_is_refused_at_once(tmp_path, capsys):
    path = edited(tmp_path, "tiny-ppo", 'kwargs: {chars: "e"}',
                  "kwargs:\n      chars: e\n      bomb:\n" + "\n".join("        " + line for line in BOMB))
    start = time.monotonic()
    code, err = validate(capsys, path)
    assert time.monotonic() - start < 10
    assert code == 2
    assert "rewards[0].kwargs.bomb.a4 (line" in err and "expands to 111,111 values" in err, err
    assert f"at most {MAX_RECIPE_VALUES:,}" in err


def test_alias_bomb_given_with_set_or_in_python_is_refused(capsys):
    code, err = validate(capsys, "tiny-dpo", "--set", "eval.x={" + ", ".join(BOMB) + "}")
    assert code == 2 and "expands to" in err, err
    from trl_plus.recipe import validate_dict

    big = ["x"] * 10
    for _ in range(8):
        big = [big] * 10
    raw = yaml.safe_load(SHIPPED["tiny-dpo"].read_text())
    raw["eval"] = {"bomb": big}
    with pytest.raises(RecipeError, match=r"eval\.bomb\[0\]\[0\]\[0\]\[0\] expands to 111,111 values"):
        validate_dict(raw, source=SHIPPED["tiny-dpo"])


def test_a_value_that_contains_itself_is_refused(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("trainer: dpo\neval: &e {again: *e}\n")
    code, err = validate(capsys, str(path))
    assert code == 2 and "eval.again (line 2) contains itself through a YAML alias" in err, err
    path.write_text("[" * 5000 + "]" * 5000 + "\n")
    code, err = validate(capsys, str(path))
    assert code == 2 and "nested too deeply" in err, err


def test_what_an_alias_repeats_is_a_copy_of_its_own(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(SHIPPED["tiny-dpo"].read_text())).replace(
        "filters:\n- name: distinct_pair\n- name: dedup\n", "filters:\n- &f {name: dedup}\n- *f\n"))
    shutil.copytree(SHIPPED["tiny-dpo"].parent / "data", tmp_path / "data")
    recipe = load_recipe(str(path), ["filters.0.normalize=true"])
    assert recipe.raw["filters"][:2] == [{"name": "dedup", "normalize": True}, {"name": "dedup"}]
    assert "&" not in recipe.to_yaml()


def test_shipped_recipes_are_far_below_the_limit():
    from trl_plus.recipe import data_items, expanded_sizes

    for path in SHIPPED.values():
        raw = read_yaml(path.read_text(), path)
        assert expanded_sizes(raw, data_items)[id(raw)] < MAX_RECIPE_VALUES / 100


# ---------------------------------------------------------------------------------------
# case 15: duplicate keys
# ---------------------------------------------------------------------------------------

def test_duplicate_keys_are_refused_naming_both_lines(tmp_path, capsys):
    path = edited(tmp_path, "tiny-dpo", "  beta: 0.1\n", "  beta: 0.1\n  beta: 5.0\n")
    code, err = validate(capsys, path)
    assert code == 2
    assert "error: dpo.beta: written twice in one mapping of" in err and "(lines 14 and 15)" in err, err
    assert "keep only the last" in err
    code, err = validate(capsys, "tiny-dpo", "--set", "kl={name: constant, value: 0.1, value: 0.2}")
    assert code == 2 and "--set kl=...: value: written twice in one mapping (both on line 1)" in err, err


def test_merge_keys_may_be_overridden():
    raw = read_yaml("defaults: &d {beta: 0.1, max_steps: 2}\ndpo:\n  <<: *d\n  beta: 0.2\n")
    assert raw["dpo"] == {"beta": 0.2, "max_steps": 2}


# ---------------------------------------------------------------------------------------
# case 14: a misspelt blocked plugin
# ---------------------------------------------------------------------------------------

def test_misspelt_blocked_plugin_warns_with_closest_name(monkeypatch, caplog):
    from trl_plus import manager

    monkeypatch.setattr(manager, "_warned_unknown", set())
    monkeypatch.setenv(manager.BLOCK_ENV, "rewards.htp, filters.dedup")
    with caplog.at_level(logging.WARNING, logger="trl_plus"):
        pm = manager.get_plugin_manager(autoload=False)
    assert pm.is_blocked("trl_plus.plugins.filters.dedup")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert "TRL_PLUS_BLOCK_PLUGINS names 'rewards.htp', which is no plugin: nothing is blocked under that name. " \
           "Did you mean: rewards.http?" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trl_plus"):
        manager.get_plugin_manager(autoload=False, blocked=["rewards.http", "trl_plus.plugins.kl.warmup"])
    assert not caplog.records


# ---------------------------------------------------------------------------------------
# "Also": what validate runs, and --no-import
# ---------------------------------------------------------------------------------------

def test_validate_no_import_runs_nothing_the_recipe_names(tmp_path, capsys, monkeypatch):
    import sys

    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n\ndef score(p, c, **k):\n"
                                      "    return [1.0] * len(c)\n")
    package = tmp_path / "pkg_h21"
    package.mkdir()
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('pkg')\n")
    (package / "rewards.py").write_text("from math import *\nclass Score:\n    def __call__(self, p, c):\n"
                                        "        return [0.0] * len(c)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # a path given with --set is relative to the working directory
    path = copy_shipped(tmp_path, "tiny-ppo")
    for ref in ("evil.py:score", "evil:score", "pkg_h21.rewards:Score"):
        code, out = validate(capsys, path, "--no-import", "--set", f"rewards.0.function={ref}",
                             "--set", "rewards.0.kwargs=null")
        assert code == 0 and "python references read, not imported" in out, (ref, out)
        assert not marker.exists() and "pkg_h21" not in sys.modules, ref
    code, out = validate(capsys, path, "--no-import", "--set", "rewards.0.function=evil.py:scor")
    assert code == 2 and "rewards[0].function: '" in out and "defines no 'scor' at its top level" in out, out
    assert "Did you mean: score?" in out
    code, out = validate(capsys, path, "--no-import", "--set", "rewards.0.function=pkg_h21.nothere:Score")
    assert code == 2 and "cannot find module 'pkg_h21.nothere'" in out, out
    assert not marker.exists()
    code, out = validate(capsys, path, "--set", "rewards.0.function=evil.py:score", "--set", "rewards.0.kwargs=null")
    assert code == 0 and marker.exists()  # without --no-import the module is imported: its code ran


def test_validate_help_says_what_it_runs(capsys):
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "is imported to check it, which runs that module's top-level code" in out
    assert "--no-import" in out and "without running any of it" in out


# ---------------------------------------------------------------------------------------
# cases of our own
# ---------------------------------------------------------------------------------------

def test_a_recipe_that_is_not_text_says_so(tmp_path, capsys):
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    code, err = validate(capsys, str(path))
    assert code == 2 and "not a recipe: not UTF-8 text" in err, err


def test_an_empty_recipe_says_so(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("# nothing yet\n")
    code, err = validate(capsys, str(path))
    assert code == 2 and "the recipe is empty" in err, err


def test_python_reward_kwargs_are_checked_against_the_function(tmp_path, capsys, monkeypatch):
    (tmp_path / "strict_reward.py").write_text(
        "def score(prompts, completions, chars: str = 'e', scale: float = 1.0):\n    return [0.0] * len(completions)\n")
    monkeypatch.chdir(tmp_path)
    path = copy_shipped(tmp_path, "tiny-ppo")
    code, err = validate(capsys, path, "--set", "rewards.0.function=strict_reward.py:score",
                         "--set", "rewards.0.kwargs={chrs: e}", "--set", "rewards.0.kwargs.scale=1,5")
    assert code == 2
    assert "rewards[0].kwargs.chrs: python reward " in err and "takes no keyword 'chrs'. Did you mean: chars?" in err
    assert "rewards[0].kwargs.scale: python reward " in err and "expected a number, got '1,5'" in err, err
    assert "(YAML 1.1 reads 1,5 as a string: a decimal comma; write 1.5)" in err


def test_misspelt_autoload_switch_warns_and_disables(monkeypatch, caplog):
    from trl_plus import manager

    monkeypatch.setattr(manager, "_warned_unknown", set())
    monkeypatch.setenv(manager.AUTOLOAD_ENV, "ture")
    with caplog.at_level(logging.WARNING, logger="trl_plus"):
        assert manager._env_flag(manager.AUTOLOAD_ENV) is True  # the safe side: no third-party plugin loads
    assert "TRL_PLUS_DISABLE_PLUGIN_AUTOLOAD='ture' is neither on" in caplog.text and "Did you mean: true?" in caplog.text
    monkeypatch.setenv(manager.AUTOLOAD_ENV, "0")
    assert manager._env_flag(manager.AUTOLOAD_ENV) is False
