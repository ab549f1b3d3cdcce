"""Paths: command-line paths resolve against the working directory, recipe paths against
the recipe's folder, ``--set`` values against the working directory; and the pipeline's
start-up checks report every problem before the first stage runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from trl_plus.cli import main
from trl_plus.recipe import load_recipe, shipped_recipes

from test_pipeline import SMALL  # the reduced quickstart: every stage runs, on a few hundred rows

GOLD = "trl_plus.pipeline.corpus:gold_reward"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def prompt_rows(n: int = 6):
    return [{"prompt": f"review : the movie {w}"} for w in ["was", "is", "felt", "seemed", "looked", "sounded"][:n]]


# -- end to end, relative paths only --------------------------------------------------------


@pytest.mark.slow
def test_quickstart_eval_and_report_with_relative_paths(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    shipped_dir = shipped_recipes()["quickstart"].parent
    had_runs = (shipped_dir / "runs").exists()

    # (a) the README's first command, reduced: the run folder is relative to the cwd
    args = ["quickstart", "--out", "runs/qs", "--no-progress"] + [a for s in SMALL for a in ("--set", s)]
    assert main(args) == 0, capsys.readouterr().err
    report = tmp_path / "runs" / "qs" / "report"
    assert (report / "report.md").exists() and (report / "report.html").exists()
    assert str(report / "report.html") in capsys.readouterr().out
    assert (shipped_dir / "runs").exists() == had_runs  # nothing landed beside the recipe

    # (b) `trl-plus eval` of a checkpoint of that run, every path relative
    ckpt = sorted((tmp_path / "runs" / "qs" / "dpo").glob("*/config.json"))[0].parent.relative_to(tmp_path)
    write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(4))
    code = main(["eval", str(ckpt), "--reference", "runs/qs/sft", "--prompts", "prompts.jsonl", "--out", "ev",
                 "--judge", f"python:function={GOLD}", "--max-new-tokens", "4", "--kl-samples", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert results["checkpoint"] == str(tmp_path / ckpt)
    assert results["reference"] == str(tmp_path / "runs" / "qs" / "sft")
    assert results["prompts"]["count"] == 4 and results["kl"]["kl"] is not None
    assert results["win_rates"]

    # (c) `trl-plus report RUN_DIR` re-renders from the relative run folder
    (report / "report.html").unlink()
    assert main(["report", "runs/qs", "--title", "again"]) == 0
    assert "again" in (report / "report.html").read_text()


# -- recipe paths and --set paths --------------------------------------------------------


def test_run_folder_is_absolute(tmp_path, monkeypatch):
    from trl_plus.pipeline.rundir import RunDir

    monkeypatch.chdir(tmp_path)
    run = RunDir("runs/x")
    assert run.root == tmp_path / "runs" / "x" and run.root.is_absolute()
    monkeypatch.chdir("/")
    assert run.path("corpus", "eval_prompts.jsonl") == tmp_path / "runs" / "x" / "corpus" / "eval_prompts.jsonl"


def _recipe_folder(tmp_path: Path) -> Path:
    """A copy of the quickstart recipe whose paths all point beside it."""
    folder = tmp_path / "recipe_dir"
    folder.mkdir()
    raw = yaml.safe_load(shipped_recipes()["quickstart"].read_text())
    write_jsonl(folder / "prompts.jsonl", prompt_rows())
    write_jsonl(folder / "pairs.jsonl", [{"prompt": "p", "chosen": " great .", "rejected": " dull ."}])
    (folder / "gold.py").write_text(f"from {GOLD.split(':')[0]} import gold_reward as score\n")
    (folder / "rm").mkdir()
    (folder / "base").mkdir()
    raw["gold"] = [{"name": "python", "function": "gold.py:score", "alias": "gold"}]
    raw["stages"]["sft"]["base"] = "base"
    raw["stages"]["pairs"]["dataset"] = "pairs.jsonl"
    raw["eval"]["prompts"] = "prompts.jsonl"
    raw["eval"]["judges"] = [{"name": "reward_model", "model": "rm"}]
    (folder / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def test_recipe_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch, capsys):
    folder = _recipe_folder(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(folder / "recipe.yaml")
    raw = recipe.raw
    assert raw["eval"]["prompts"] == str(folder / "prompts.jsonl")
    assert raw["stages"]["sft"]["base"] == str(folder / "base")
    assert raw["stages"]["pairs"]["dataset"] == str(folder / "pairs.jsonl")
    assert raw["eval"]["judges"][0]["model"] == str(folder / "rm")
    assert raw["gold"][0]["function"] == f"{folder / 'gold.py'}:score"
    assert main(["validate", str(folder / "recipe.yaml")]) == 0, capsys.readouterr().err

    (folder / "prompts.jsonl").unlink()
    assert main(["validate", str(folder / "recipe.yaml")]) == 2
    err = capsys.readouterr().err
    assert "eval.prompts" in err and str(folder / "prompts.jsonl") in err


def test_set_paths_resolve_against_the_working_directory(tmp_path, monkeypatch, capsys):
    folder = _recipe_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "mine.jsonl", prompt_rows())
    # a shipped recipe lives inside the installed package: its --set paths are the cwd's
    recipe = load_recipe("quickstart", ["eval.prompts=mine.jsonl"])
    assert recipe.raw["eval"]["prompts"] == str(tmp_path / "mine.jsonl")
    assert main(["validate", "quickstart", "--set", "eval.prompts=mine.jsonl"]) == 0, capsys.readouterr().err
    # so are a user's recipe's, while what the recipe itself says stays beside it
    recipe = load_recipe(folder / "recipe.yaml", ["eval.prompts=mine.jsonl", "stages.pairs.samples_per_prompt=3"])
    assert recipe.raw["eval"]["prompts"] == str(tmp_path / "mine.jsonl")
    assert recipe.raw["stages"]["pairs"]["dataset"] == str(folder / "pairs.jsonl")
    assert recipe.raw["gold"][0]["function"] == f"{folder / 'gold.py'}:score"


# -- start-up checks ----------------------------------------------------------------------


def test_preflight_lists_every_problem_before_any_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main([
        "compare", "quickstart", "--out", "run", "--no-progress",
        "--set", "eval.prompts=missing.jsonl",
        "--set", "eval.tasks=[trl_plus_offline,no_such_task_xyz,trl_plus_review_sentimnt]",
        "--set", "gold.0.function=no_such_module_xyz:gold",
        "--set", "eval.judges=[{name: reward_model, model: ./no_rm}]",
        "--set", "stages.sft.base=some-org/not-cached-model",
    ])
    assert code == 2
    err = capsys.readouterr().err
    problems = dict(line.strip().split(": ", 1) for line in err.splitlines()[1:])
    assert set(problems) == {"eval.prompts", "eval.tasks[1]", "eval.tasks[2]", "gold[0].function", "eval.judges[0].model",
                             "stages.sft.base"}, err
    assert str(tmp_path / "missing.jsonl") in problems["eval.prompts"]
    assert "no_such_module_xyz" in problems["gold[0].function"]
    assert "Did you mean: trl_plus_review" in problems["eval.tasks[2]"]
    assert "offline" in problems["stages.sft.base"]
    assert str(tmp_path / "no_rm") in problems["eval.judges[0].model"]
    assert "Traceback" not in err
    run = tmp_path / "run"
    assert not run.exists() or not any(run.iterdir())  # no stage ran, not even the corpus


def test_validate_runs_the_start_up_checks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "quickstart", "--set", "eval.prompts=missing.jsonl"]) == 2
    assert "eval.prompts: file not found" in capsys.readouterr().err
    write_jsonl(tmp_path / "other.jsonl", [{"text": "no prompt column"}])
    assert main(["validate", "quickstart", "--set", "eval.prompts=other.jsonl"]) == 2
    assert "no column 'prompt'" in capsys.readouterr().err


def test_pipeline_recipe_without_a_generated_corpus_checks_its_models(tmp_path, monkeypatch):
    from trl_plus.pipeline.preflight import PreflightError, check_pipeline

    folder = _recipe_folder(tmp_path)
    recipe = load_recipe(folder / "recipe.yaml", ["stages.corpus=null"])
    check_pipeline(recipe)
    shutil.rmtree(folder / "base")
    (folder / "pairs.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    with pytest.raises(PreflightError) as err:
        check_pipeline(recipe)
    assert [key for key, _ in err.value.problems] == ["stages.sft.base", "stages.pairs.dataset"]
    assert "no column 'rejected'" in str(err.value)


# -- command-line paths ------------------------------------------------------------------


def test_eval_of_a_missing_relative_checkpoint_names_it_and_the_cwd(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "p.jsonl", prompt_rows())
    for checkpoint in ("missing/ckpt", "runs/missing/ckpt"):
        assert main(["eval", checkpoint, "--prompts", "p.jsonl", "--out", "o", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "checkpoint: no " in err and repr(checkpoint) in err and str(tmp_path) in err, err
        assert "Traceback" not in err
    assert main(["eval", "tiny:causal-lm", "--reference", "ref/missing", "--prompts", "p.jsonl", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "--reference" in err and "'ref/missing'" in err and str(tmp_path) in err
    assert not (tmp_path / "o").exists()


def test_train_resume_from_a_missing_relative_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "tiny-dpo", "--output-dir", "o", "--resume", "o/checkpoint-9"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "'o/checkpoint-9'" in err and str(tmp_path) in err
