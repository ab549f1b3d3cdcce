"""A comparison run folder is never mixed, lost or misreported.

- A re-run with a changed recipe reuses only the steps whose recorded settings match, retrains
  the others (the log names the key that changed) and reports only the runs the recipe names:
  the rest stay on disk, listed as left out.
- A run folder whose comparison did not finish is rendered as incomplete (title and verdict).
- A folder of the user's own files (the recipe being run among them) is refused, and the
  run's copy of the recipe never replaces the recipe being run.
- An output folder that cannot be one (a file, below a file, read-only, too long a path, held
  by another run) is refused at start-up in one line.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from trl_plus.cli import main

PREFS = Path(__file__).resolve().parents[1] / "recipes" / "data" / "tiny_prefs.jsonl"
HELD = [f"review : the {w} {v}" for w in ("costumes", "soundtrack", "sets", "effects", "editing", "finale")
        for v in ("was", "felt", "seemed", "is")]


def _recipe(folder: Path, model, rm, name: str = "recipe.yaml", comment: str = "") -> Path:
    """A DPO-only comparison on the tiny models: no SFT training, no reward stage, two steps a run."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prefs.jsonl").write_text(PREFS.read_text())
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in HELD))
    recipe = {
        "rewards": [{"name": "reward_model", "model": str(rm), "alias": "gold"}],
        "stages": {"seeds": [0, 1], "checkpoints": 2, "sft": {"base": str(model), "train": False},
                   "pairs": {"dataset": "prefs.jsonl"},
                   "dpo": {"betas": [0.1], "args": {"max_steps": 2, "per_device_train_batch_size": 8}}},
        "eval": {"prompts": "prompts.jsonl", "generation": {"max_new_tokens": 6, "batch_size": 16},
                 "kl": {"num_samples": 1}},
    }
    path = folder / name
    path.write_text(comment + yaml.safe_dump(recipe))
    return path


def _compare(recipe: Path, out: Path, *sets: str) -> int:
    return main(["compare", str(recipe), "--out", str(out), "--no-progress"] + [a for s in sets for a in ("--set", s)])


def _report(out: Path) -> dict:
    return json.loads((out / "report" / "report.json").read_text())


def _one_error(err: str) -> bool:
    """One ``trl-plus: error:`` line and no traceback (datasets' own bars aside)."""
    return "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("trl-plus:")]) == 1


def _reported_runs(out: Path) -> set[str]:
    return {p["run"] for p in _report(out)["points"] if p["method"] != "sft"}


# -- 1. a changed recipe never mixes two experiments --------------------------------------


@pytest.mark.slow
def test_rerun_with_a_changed_recipe_reports_only_the_runs_it_names(tmp_path, tiny_model_path, tiny_reward_model_path,
                                                                      capsys, one_thread):
    recipe = _recipe(tmp_path / "cfg", tiny_model_path, tiny_reward_model_path)
    out = tmp_path / "runA"
    assert _compare(recipe, out) == 0
    assert _reported_runs(out) == {"dpo/beta0.1-seed0", "dpo/beta0.1-seed1"}
    marker = json.loads((out / "dpo" / "beta0.1-seed0" / "done.json").read_text())
    # each run records what it was made from: its settings, their hash, its upstream steps
    assert marker["settings"]["dpo"]["beta"] == 0.1 and marker["settings_hash"] and set(marker["upstream"]) == {
        "pairs", "sft"}
    capsys.readouterr()

    # another beta: the beta0.1 runs stay on disk, out of the report, and the log and report say so
    assert _compare(recipe, out, "stages.dpo.betas=[0.3]") == 0
    console = capsys.readouterr().out
    assert "left out of the report, kept on disk" in console and "dpo/beta0.1-seed0" in console
    assert _reported_runs(out) == {"dpo/beta0.3-seed0", "dpo/beta0.3-seed1"}
    data = _report(out)
    assert {p["run"] for p in data["points"]} == {"sft", "dpo/beta0.3-seed0", "dpo/beta0.3-seed1"}
    assert data["status"]["left_out"] == ["dpo/beta0.1-seed0", "dpo/beta0.1-seed1"]
    assert data["verdict"][-1].startswith("Left out of this report: dpo/beta0.1-seed0, dpo/beta0.1-seed1")
    assert (out / "dpo" / "beta0.1-seed0" / "done.json").exists()  # nothing deleted
    assert all(r["stage"] not in ("dpo/beta0.1-seed0", "dpo/beta0.1-seed1") for r in data["costs"])

    # one seed at another learning rate: retrained, named in the log; the other seed is not reported
    assert _compare(recipe, out, "stages.seeds=[0]", "stages.dpo.args.learning_rate=5.0e-4") == 0
    console = capsys.readouterr().out
    assert "dpo/beta0.1-seed0" in console and "dpo.learning_rate: 0.0001 -> 0.0005): retraining" in console
    assert _reported_runs(out) == {"dpo/beta0.1-seed0"}  # never a 1e-4 seed next to a 5e-4 one
    assert json.loads((out / "dpo" / "beta0.1-seed0" / "done.json").read_text())["settings"]["dpo"][
        "learning_rate"] == 5.0e-4
    assert json.loads((out / "dpo" / "beta0.1-seed1" / "done.json").read_text())["settings"]["dpo"][
        "learning_rate"] == 1e-4  # kept on disk as it was
    assert "dpo/beta0.1-seed1" in _report(out)["status"]["left_out"]
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["stages"]["seeds"] == [0] and saved["stages"]["dpo"]["args"]["learning_rate"] == 5.0e-4
    points = json.loads((out / "eval" / "summary" / "points.json").read_text())
    assert {p["run"] for p in points} == {"sft", "dpo/beta0.1-seed0"}  # the eval summary agrees

    # the same command again: everything reused
    assert _compare(recipe, out, "stages.seeds=[0]", "stages.dpo.args.learning_rate=5.0e-4") == 0
    console = capsys.readouterr().out
    assert "dpo/beta0.1-seed0            done already: skipped" in console and "retraining" not in console
    assert _report(out)["complete"] is True and not _report(out)["title"].startswith("INCOMPLETE")

    # the preference file edited in place (same path, same recipe): the pairs and the runs are redone
    prefs = recipe.parent / "prefs.jsonl"
    prefs.write_text("".join(prefs.read_text().splitlines(keepends=True)[:160]))
    assert _compare(recipe, out, "stages.seeds=[0]", "stages.dpo.args.learning_rate=5.0e-4") == 0
    console = capsys.readouterr().out
    assert f"pairs                        out of date (the contents of {prefs} changed): redoing it" in console
    assert "dpo/beta0.1-seed0            out of date (pairs redone since): retraining" in console
    assert sum(1 for _ in open(out / "pairs" / "pairs.jsonl")) == 160
    assert json.loads((out / "pairs" / "done.json").read_text())["inputs"][str(prefs)]


# -- 7. an unfinished comparison is reported as unfinished -------------------------------------


@pytest.mark.slow
def test_report_of_a_run_interrupted_during_eval_is_marked_incomplete(tmp_path, tiny_model_path, tiny_reward_model_path,
                                                                       monkeypatch, capsys, one_thread):
    import trl_plus.eval as harness

    recipe = _recipe(tmp_path / "cfg", tiny_model_path, tiny_reward_model_path)
    out = tmp_path / "run"
    real, calls = harness.evaluate_checkpoint, []

    def interrupted(*args, **kwargs):  # SFT (test and validation passes) and one checkpoint, then Ctrl-C
        calls.append(1)
        if len(calls) > 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(harness, "evaluate_checkpoint", interrupted)
    assert _compare(recipe, out) == 130
    monkeypatch.setattr(harness, "evaluate_checkpoint", real)
    capsys.readouterr()

    assert main(["report", str(out)]) == 0
    captured = capsys.readouterr()
    assert "incomplete run" in captured.err
    data = _report(out)
    assert data["complete"] is False and data["title"] == "INCOMPLETE run: PPO vs DPO"
    first = data["verdict"][0]
    assert first.startswith("INCOMPLETE run:") and "stages not finished: eval" in first
    for missing in ("dpo/beta0.1-seed0/step-2", "dpo/beta0.1-seed1/step-1", "dpo/beta0.1-seed1/step-2"):
        assert missing in first and missing in json.dumps(data["status"]["not_evaluated"])
    md = (out / "report" / "report.md").read_text()
    assert md.startswith("# INCOMPLETE run: PPO vs DPO") and "- INCOMPLETE run: this report covers only" in md
    assert "INCOMPLETE run: PPO vs DPO" in (out / "report" / "report.html").read_text()

    # the same command finishes it; the report is whole again
    assert _compare(recipe, out) == 0
    data = _report(out)
    assert data["complete"] is True and data["title"] == "PPO vs DPO" and not data["verdict"][0].startswith("INCOMPLETE")
    assert _reported_runs(out) == {"dpo/beta0.1-seed0", "dpo/beta0.1-seed1"}


@pytest.mark.slow
def test_report_of_a_run_interrupted_during_training_is_refused_listing_what_is_missing(
        tmp_path, tiny_model_path, tiny_reward_model_path, monkeypatch, capsys, one_thread):
    import trl_plus.pipeline.policy as dpo  # trains every policy run (trainers.from_recipe); only DPO here

    recipe = _recipe(tmp_path / "cfg", tiny_model_path, tiny_reward_model_path)
    out = tmp_path / "run"
    assert _compare(recipe, out) == 0
    rendered = (out / "report" / "report.md").read_text()
    real = dpo.train_from_recipe

    def interrupted(recipe, output_dir, *args, **kwargs):
        if output_dir.endswith("beta0.5-seed1"):
            raise KeyboardInterrupt
        return real(recipe, output_dir, *args, **kwargs)

    monkeypatch.setattr(dpo, "train_from_recipe", interrupted)
    # a wider sweep, interrupted in its last run: nothing of its eval exists yet
    assert _compare(recipe, out, "stages.dpo.betas=[0.1,0.5]") == 130
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert _one_error(err) and "finish the run first" in err
    assert "1 run(s) not trained: dpo/beta0.5-seed1 (interrupted)" in err
    assert "the checkpoints of 4 run(s) not evaluated: dpo/beta0.1-seed0, dpo/beta0.1-seed1, dpo/beta0.5-seed0" in err
    assert (out / "report" / "report.md").read_text() == rendered  # the last whole report is kept


# -- 19 (compare). the run's copy of the recipe never replaces the recipe being run -----------


def test_compare_refuses_the_recipes_own_folder_of_user_files(tmp_path, tiny_model_path, tiny_reward_model_path, capsys):
    folder = tmp_path / "project"
    recipe = _recipe(folder, tiny_model_path, tiny_reward_model_path, comment="# my experiment, beta sweep\n")
    before = recipe.read_text()
    entries = sorted(p.name for p in folder.iterdir())
    assert _compare(recipe, folder) == 2
    err = capsys.readouterr().err
    assert "is not a run folder of trl-plus but holds recipe.yaml" in err and "recipe being run" in err
    assert _one_error(err)
    assert recipe.read_text() == before and sorted(p.name for p in folder.iterdir()) == entries  # nothing written


def test_compare_refuses_a_folder_whose_sft_folder_is_the_users_model(tmp_path, tiny_model_path, tiny_reward_model_path,
                                                                      capsys):
    """A user folder holding a model under ``sft/``: the sft stage would wipe it (a folder
    without our marker is redone from scratch). Refused, the model untouched."""
    import shutil

    folder = tmp_path / "work"
    shutil.copytree(tiny_model_path, folder / "sft")
    recipe = _recipe(tmp_path / "cfg", folder / "sft", tiny_reward_model_path)
    files = sorted(p.name for p in (folder / "sft").iterdir())
    assert _compare(recipe, folder) == 2
    assert "holds sft/" in capsys.readouterr().err
    assert sorted(p.name for p in (folder / "sft").iterdir()) == files


def test_rerun_from_the_runs_own_recipe_copy_keeps_it(tmp_path, tiny_model_path, tiny_reward_model_path):
    from trl_plus.pipeline import run_pipeline
    from trl_plus.recipe import load_recipe

    recipe = _recipe(tmp_path / "cfg", tiny_model_path, tiny_reward_model_path)
    out = tmp_path / "run"
    quiet = dict(progress=False, log=lambda *a: None, stop_after="pairs")
    run_pipeline(load_recipe(recipe), out, **quiet)
    copy = out / "recipe.yaml"
    copy.write_text("# edited by hand\n" + copy.read_text())
    edited = copy.read_text()
    run_pipeline(load_recipe(copy), out, **quiet)  # the copy is the recipe being run
    assert copy.read_text() == edited and not (out / "recipe.resolved.yaml").exists()
    lines = []
    run_pipeline(load_recipe(copy, ["stages.seeds=[3]"]), out, progress=False, log=lines.append, stop_after="pairs")
    assert copy.read_text() == edited  # never overwritten, also with --set
    assert yaml.safe_load((out / "recipe.resolved.yaml").read_text())["stages"]["seeds"] == [3]
    assert any("recipe.yaml is the recipe being run: left as it is" in line for line in lines)


# -- run folders that cannot be one -------------------------------------------------------------


def _bad_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    deep = tmp_path.joinpath(*(["d" * 200] * 22))
    return {"file": (a_file, "is a file, not a folder"), "below_file": (a_file / "run", "which is a file"),
            "long_name": (tmp_path / ("x" * 300), "bytes long; this file system allows"),
            "long_path": (deep, "this system's paths stop at")}


@pytest.mark.parametrize("case", ["file", "below_file", "long_name", "long_path"])
@pytest.mark.parametrize("command", ["compare", "quickstart", "report"])
def test_unusable_run_folders_are_refused_in_one_line(tmp_path, tiny_model_path, tiny_reward_model_path, capsys,
                                                      command, case):
    out, expected = _bad_paths(tmp_path)[case]
    if command == "compare":
        code = _compare(_recipe(tmp_path / "cfg", tiny_model_path, tiny_reward_model_path), out)
    elif command == "quickstart":
        code = main(["quickstart", "--out", str(out), "--no-progress"])
    else:
        code = main(["report", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and _one_error(err), err
    assert (tmp_path / "a_file").read_text() == "x"


@pytest.mark.parametrize("command", ["compare", "report"])
def test_read_only_run_folder_is_refused_before_anything_runs(tmp_path, tiny_model_path, tiny_reward_model_path,
                                                              monkeypatch, capsys, command):
    import tempfile

    out = tmp_path / "ro"
    (out / "eval").mkdir(parents=True)
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):  # root writes anyway: a read-only mount is what stops it
            def read_only(*args, **kwargs):
                raise PermissionError(errno.EROFS, "Read-only file system", kwargs.get("dir"))

            monkeypatch.setattr(tempfile, "mkstemp", read_only)
        if command == "compare":
            code = _compare(_recipe(tmp_path / "cfg", tiny_model_path, tiny_reward_model_path), out / "run")
        else:
            code = main(["report", str(out)])
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2 and "cannot" in err and "choose a folder you can write to" in err and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == ["eval"]


@pytest.mark.parametrize("code, fault", [(2, errno.EACCES), (1, errno.ENOSPC)])
def test_a_write_failing_mid_run_is_one_line_and_keeps_the_finished_stages(tmp_path, tiny_model_path,
                                                                          tiny_reward_model_path, monkeypatch, capsys,
                                                                          code, fault):
    import trl_plus.pipeline.stages as stages

    def failing(path, rows):
        raise OSError(fault, os.strerror(fault), str(path))

    monkeypatch.setattr(stages, "write_jsonl", failing)
    out = tmp_path / "run"
    assert _compare(_recipe(tmp_path / "cfg", tiny_model_path, tiny_reward_model_path), out) == code
    err = capsys.readouterr().err
    assert f"could not write {out / 'pairs' / 'pairs.jsonl'}" in err and "re-running the same command resumes" in err
    assert "Traceback" not in err and (out / "sft" / "done.json").exists()


def test_a_second_compare_into_a_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(
        tmp_path, tiny_model_path, tiny_reward_model_path, capsys):
    import fcntl
    import socket

    from trl_plus.pipeline import run_pipeline
    from trl_plus.pipeline.rundir import LOCK
    from trl_plus.recipe import load_recipe

    recipe = _recipe(tmp_path / "cfg", tiny_model_path, tiny_reward_model_path)
    out = tmp_path / "run"
    out.mkdir()
    lock = out / LOCK
    # a live holder: another open file description holding the lock, as another compare would
    lock.write_text(json.dumps({"pid": 4242, "host": socket.gethostname(), "started": "now"}))
    held = os.open(lock, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert _compare(recipe, out) == 2
    finally:
        os.close(held)
    err = capsys.readouterr().err
    assert "is in use by another run (pid 4242" in err and _one_error(err)
    assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing written
    # a lock file left by a run that died (a crash): taken over, said so, and released at the end
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    lines = []
    run_pipeline(load_recipe(recipe), out, progress=False, log=lines.append, stop_after="sft")
    assert (out / "sft" / "done.json").exists() and not lock.exists()
    assert any(f"(pid {dead.pid}) is no longer running" in line for line in lines)


def test_out_inside_a_run_folder_is_refused(tmp_path, tiny_model_path, tiny_reward_model_path, capsys):
    """`--out run/report` (a careless tab completion): a run nested in another run's folder."""
    run = tmp_path / "run"
    (run / "report").mkdir(parents=True)
    (run / "plan.json").write_text(json.dumps({"runs": [], "steps": {}, "points": None}))
    assert _compare(_recipe(tmp_path / "cfg", tiny_model_path, tiny_reward_model_path), run / "report") == 2
    err = capsys.readouterr().err
    assert f"is inside the run folder {run}" in err and _one_error(err)
    assert sorted(p.name for p in (run / "report").iterdir()) == []
    (run / "eval").mkdir()
    assert main(["report", str(run / "report")]) == 2
    assert f"it is inside the run folder {run}: give that one" in capsys.readouterr().err


def test_a_damaged_plan_is_refused_rather_than_reading_every_run(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "plan.json").write_text("{")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "plan.json is damaged" in err and "trl-plus compare RECIPE --out" in err and _one_error(err)
