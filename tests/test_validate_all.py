"""A recipe's problems are all found at start-up, at once, each under its key path, before
any model loads: `trl-plus validate` and the start of `train` run the same checks."""

import shutil
import subprocess
import sys
import time

import pytest
import yaml

from trl_plus.cli import main
from trl_plus.components import Components
from trl_plus.errors import RecipeError, RecipeProblems
from trl_plus.manager import Hooks
from trl_plus.recipe import load_recipe, shipped_recipes


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: validation must not load one."""
    import transformers

    import trl_plus.loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded during validation")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(trl_plus.loading, "load_model", refuse)


def write(folder, recipe: dict, name="recipe.yaml") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prefs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    path = folder / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def ppo_recipe(**ppo) -> dict:
    return {
        "trainer": "ppo",
        "model": {"name_or_path": "tiny:causal-lm"},
        "data": {"train": {"path": "prefs.jsonl"}},
        "ppo": {"num_generations": 2, "max_steps": 2, **ppo},
    }


def problems_of(err: str) -> dict:
    lines = err.strip().splitlines()
    assert "problems:" in lines[0], err
    return dict(line.strip().split(": ", 1) for line in lines[1:])


@pytest.mark.parametrize("command", ["validate", "train"])
def test_five_independent_mistakes_are_listed_at_once(tmp_path, capsys, no_model_loads, command):
    recipe = ppo_recipe(learning_rate=-1e-3, per_device_train_batch_size=0)
    recipe["kl"] = {"name": "adaptive", "init": 0.05, "target": 0, "horizon": 100}
    recipe["rewards"] = [
        {"name": "python", "function": "no_such_module_xyz:score"},
        {"name": "http", "url": "ftp://example.com/score"},
    ]
    path = write(tmp_path, recipe)
    import trl_plus.trainers.ppo_config  # noqa: F401  (TRL's import is not validation's time)

    started = time.perf_counter()
    code = main([command, path, *(["--output-dir", str(tmp_path / "out")] if command == "train" else [])])
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2, err
    problems = problems_of(err)
    assert set(problems) == {"ppo.learning_rate", "ppo.per_device_train_batch_size", "kl.target",
                             "rewards[0].function", "rewards[1].url"}, err
    assert "-0.001" in problems["ppo.learning_rate"] and "> 0" in problems["ppo.learning_rate"]
    assert ">= 1" in problems["ppo.per_device_train_batch_size"]
    assert "got 0" in problems["kl.target"]
    assert "no_such_module_xyz" in problems["rewards[0].function"]
    assert "ftp://example.com/score" in problems["rewards[1].url"]
    assert "Traceback" not in err
    assert elapsed < 10, f"validation took {elapsed:.1f}s"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("max_steps", [0, -5])
def test_max_steps_zero_or_negative_is_refused(tmp_path, capsys, max_steps):
    path = write(tmp_path, ppo_recipe(max_steps=max_steps))
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert "error: ppo.max_steps:" in err and f"got {max_steps}" in err and "-1" in err, err


def test_max_steps_minus_one_means_epochs(tmp_path):
    recipe = load_recipe(write(tmp_path, ppo_recipe(max_steps=-1, num_train_epochs=1)))
    assert recipe.trainer_args["max_steps"] == -1


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("gradient_accumulation_steps", 0, [">= 1"]),
        ("num_train_epochs", 0, ["> 0"]),
        ("beta", -0.1, [">= 0"]),  # PPO's beta may be 0 (no KL penalty), never negative
        ("vf_coef", -1, ["PPOConfig rejected", "vf_coef"]),  # the config's own check, under its field
    ],
)
def test_trainer_value_ranges_name_the_key(tmp_path, capsys, key, value, words):
    path = write(tmp_path, ppo_recipe(**{key: value}))
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert f"error: ppo.{key}:" in err and all(w in err for w in words), err


def test_ppo_beta_zero_is_valid_dpo_beta_zero_is_not(tmp_path, capsys):
    assert main(["validate", write(tmp_path, ppo_recipe(beta=0.0))]) == 0
    assert main(["validate", "tiny-dpo", "--set", "dpo.beta=0"]) == 2
    assert "error: dpo.beta: must be a number > 0" in capsys.readouterr().err


def _reward_files(folder, tag: str) -> None:
    """A reward module that imports a helper beside it (names unique to the test)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"helper_{tag}.py").write_text("def length(text):\n    return float(len(text))\n")
    (folder / f"rewards_{tag}.py").write_text(
        f"import helper_{tag}\n\ndef score(prompts, completions, **kw):\n"
        f"    return [helper_{tag}.length(c) for c in completions]\n"
    )


@pytest.mark.parametrize("form", ["file", "module"])
def test_reward_module_beside_the_recipe_imports(tmp_path, monkeypatch, form):
    tag = f"{form}_{tmp_path.name}".replace("-", "_")
    folder = tmp_path / "recipes"
    _reward_files(folder, tag)
    ref = f"rewards_{tag}.py:score" if form == "file" else f"rewards_{tag}:score"
    path = write(folder, {**ppo_recipe(), "rewards": [{"name": "python", "function": ref}]})
    monkeypatch.chdir("/")  # nothing is found through the working directory
    monkeypatch.setattr(sys, "path", list(sys.path))
    recipe = load_recipe(path)
    mix = Components(Hooks()).reward_mix([r.model_dump() for r in recipe.rewards])
    assert mix(["p", "p"], ["ab", "abcd"]) == [2.0, 4.0]


def test_reward_module_that_raises_at_import_names_the_key(tmp_path, capsys):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "broken.py").write_text("x = 1 / 0\ndef score(p, c, **k):\n    return [0.0] * len(c)\n")
    (folder / "fine.py").write_text("def score(p, c, **k):\n    return [0.0] * len(c)\n")
    rewards = [{"name": "python", "function": "broken.py:score"}, {"name": "python", "function": "fine.py:nope"}]
    path = write(folder, {**ppo_recipe(), "rewards": rewards})
    assert main(["validate", path]) == 2
    problems = problems_of(capsys.readouterr().err)
    assert "ZeroDivisionError" in problems["rewards[0].function"]
    assert "no attribute 'nope'" in problems["rewards[1].function"]


def test_copied_shipped_recipe_says_where_it_looked(tmp_path, capsys):
    copy = tmp_path / "mine" / "tiny-dpo.yaml"
    copy.parent.mkdir()
    shutil.copy(shipped_recipes()["tiny-dpo"], copy)
    assert main(["validate", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "error: data.train.path: file not found" in err, err
    assert str(tmp_path / "mine" / "data" / "tiny_prefs.jsonl") in err
    assert "'data/tiny_prefs.jsonl'" in err and "resolves against the recipe's folder" in err


def test_model_backed_components_are_checked_not_loaded(tmp_path, capsys, no_model_loads):
    recipe = ppo_recipe()
    recipe["rewards"] = [{"name": "reward_model", "model": "tiny:reward-model"},
                         {"name": "reward_model", "model": "./no_such_rm"}]
    recipe["filters"] = [{"name": "min_reward_margin", "source": {"name": "reward_model", "model": "tiny:reward-model"}},
                         {"name": "length", "max_prompt_tokens": 8}]  # needs the tokenizer: keywords only
    assert main(["validate", write(tmp_path, recipe)]) == 2
    err = capsys.readouterr().err
    assert "error: rewards[1].model: no such model folder" in err and str(tmp_path / "no_such_rm") in err, err


def test_trainer_recipe_eval_judges_are_built_at_start_up(tmp_path, capsys):
    recipe = {**ppo_recipe(), "eval": {"judges": [{"name": "http_pairwise", "url": "ftp://judge"},
                                                  {"name": "python", "function": "nope_xyz:f"}]}}
    assert main(["validate", write(tmp_path, recipe)]) == 2
    problems = problems_of(capsys.readouterr().err)
    assert set(problems) == {"eval.judges[0].url", "eval.judges[1].source.function"}, problems


def test_schema_errors_do_not_hide_the_rest(tmp_path, capsys):
    recipe = {**ppo_recipe(learning_rate=0), "model": {"name_or_path": "tiny:causal-lm", "dtype": "float8"}, "optimiser": 1}
    assert main(["validate", write(tmp_path, recipe)]) == 2
    problems = problems_of(capsys.readouterr().err)
    assert set(problems) == {"model.dtype", "optimiser", "ppo.learning_rate"}, problems


def test_component_errors_keep_their_key_at_run_time_too():
    components = Components(Hooks())
    with pytest.raises(RecipeError) as err:
        components.kl_schedule({"name": "adaptive", "init": -1})
    assert err.value.key == "kl.init"
    with pytest.raises(RecipeError) as err:
        components.reward_mix([{"name": "http", "url": "http://ok"}, {"name": "http", "url": "file:///x"}])
    assert err.value.key == "rewards[1].url"


def test_dry_run_collects_instead_of_raising():
    from trl_plus.recipe import Problems

    problems = Problems()
    components = Components(Hooks(), problems)
    mix = components.reward_mix([{"name": "http", "url": "x"}, {"name": "python", "function": "math:sqrt"}])
    assert mix is not None and mix.labels == ["python"]
    assert components.filter_chain([{"name": "regex", "column": "prompt", "pattern": "("}]).filters == []
    assert [k for k, _ in problems.items] == ["rewards[0].url", "filters[0]"]
    with pytest.raises(RecipeProblems):
        problems.raise_if_any()


def test_recipe_module_does_not_import_the_pipeline():
    code = "import sys, trl_plus.recipe; print('trl_plus.pipeline' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_pipeline_registers_its_recipe_sections():
    # checked on load without importing the pipeline first: its sections are a built-in plugin
    code = ("import sys\nfrom trl_plus.recipe import load_recipe\n"
            "try:\n    load_recipe('quickstart', ['stages.dpo.betas=[0]'])\n"
            "except Exception as exc:\n    print(exc.key)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "stages.dpo.betas"
    sections = Hooks().recipe_sections
    assert sections["stages"].standalone and "trl-plus compare" in sections["stages"].description
    assert {"stages", "gold", "report", "launcher", "eval"} <= set(sections)


def test_missing_data_file_from_set_says_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "tiny-dpo", "--set", "data.train.path=missing.jsonl"]) == 2
    err = capsys.readouterr().err
    assert f"file not found: {tmp_path / 'missing.jsonl'}" in err and "--set gave 'missing.jsonl'" in err, err
    assert f"working directory, {tmp_path}" in err


def test_eval_command_builds_its_judges_before_any_model_loads(tmp_path, capsys, no_model_loads):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n')
    code = main(["eval", "tiny:causal-lm", "--prompts", str(prompts), "--out", str(tmp_path / "out"),
                 "--judge", "http_pairwise:url=ftp://judge", "--gold", "python:function=nope_xyz:f"])
    assert code == 2
    problems = problems_of(capsys.readouterr().err)
    assert set(problems) == {"eval.judges[0].url", "eval.gold.function"}, problems
