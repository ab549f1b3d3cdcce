"""Output folders and checkpoints, in process: a used folder is refused untouched, --overwrite,
--resume errors, default checkpointing, and a save that fails on a full disk."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from trl_plus import checkpointing
from trl_plus.cli import main
from trl_plus.errors import RunFolderError
from trl_plus.recipe import load_recipe, shipped_recipes

QUIET = ["--set", "dpo.disable_tqdm=true"]


def snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder``: its bytes' digest and modification time."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir", p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    } | {".": folder.stat().st_mtime_ns}


def fake_run(folder: Path, *names: str) -> Path:
    """A folder left by an earlier run: the named files (``name/`` for a checkpoint folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name.endswith("/"):
            (folder / name).mkdir()
            (folder / name / "model.safetensors").write_bytes(b"weights")
            (folder / name / "rng_state.pth").write_bytes(b"rng")
            (folder / name / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
        else:
            (folder / name).write_bytes(b"from the earlier run")
    return folder


def checkpoint_steps(folder: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))


# -- a folder that holds another run ---------------------------------------------------------


@pytest.mark.parametrize("marker", [
    "trainer_state.json", "checkpoint-3/", "filter_report.json", "run_info.json", "done.json", "ppo_state.json",
])
def test_a_used_output_folder_is_refused_and_left_untouched(tmp_path, capsys, marker):
    out = fake_run(tmp_path / "used", marker)
    before = snapshot(out)
    assert main(["train", "tiny-dpo", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} already holds a run ({marker}" in err and "--resume" in err and "--overwrite" in err, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert snapshot(out) == before


def test_train_from_recipe_refuses_a_used_folder_before_building_the_trainer(tmp_path):
    from trl_plus.trainers.dpo import train_from_recipe

    out = fake_run(tmp_path / "used", "model.safetensors", "trainer_state.json", "filter_report.json", "checkpoint-3/")
    before = snapshot(out)
    with pytest.raises(RunFolderError, match="already holds a run"):
        train_from_recipe(load_recipe("tiny-dpo"), str(out))
    assert snapshot(out) == before


def test_overwrite_replaces_a_run_and_an_empty_folder_is_fine(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    out.mkdir()  # empty: a fresh run may use it
    steps = ["--set", "dpo.max_steps=4", "--set", "dpo.save_steps=2"]
    assert main(["train", "tiny-dpo", "--output-dir", str(out), *steps, *QUIET]) == 0
    assert checkpoint_steps(out) == [2, 4]
    assert main(["train", "tiny-dpo", "--output-dir", str(out), *QUIET]) == 2
    assert "already holds a run" in capsys.readouterr().err

    code = main(["train", "tiny-dpo", "--output-dir", str(out), "--set", "dpo.max_steps=3", "--set", "dpo.save_steps=100",
                 "--overwrite", *QUIET])
    assert code == 0
    assert checkpoint_steps(out) == [3]  # the old run's checkpoints are gone, this run's final one is there
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert "resumed_from" not in json.loads((out / "run_info.json").read_text())


# -- --resume without a checkpoint ---------------------------------------------------------------


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    def error(*args) -> str:
        assert main(["train", "tiny-dpo", *args]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1, err
        return err

    missing = tmp_path / "missing"
    assert f"no checkpoint to resume from in {missing} (the folder does not exist)" in error(
        "--output-dir", str(missing), "--resume")
    partial = tmp_path / "partial"
    (partial / "checkpoint-5").mkdir(parents=True)  # cut short: no trainer_state.json
    (partial / "checkpoint-5" / "model.safetensors").write_bytes(b"half")
    assert f"no checkpoint to resume from in {partial} (only incomplete or non-resumable ones: checkpoint-5)" in error(
        "--output-dir", str(partial), "--resume")
    not_one = tmp_path / "notes"
    not_one.mkdir()
    assert f"--resume: {not_one} is not a resumable checkpoint (no model weights, no RNG state" in error(
        "--output-dir", str(tmp_path / "o"), "--resume", str(not_one))
    finished = fake_run(tmp_path / "finished", "model.safetensors", "trainer_state.json", "checkpoint-3/")
    assert f"did you mean {finished / 'checkpoint-3'}?" in error("--output-dir", str(finished), "--resume", str(finished))
    assert "not both" in error("--output-dir", str(finished), "--resume", "--overwrite")


# -- default checkpointing ------------------------------------------------------------------------


def test_shipped_recipes_keep_checkpoints():
    for name in ("tiny-dpo", "tiny-ppo"):
        args = load_recipe(name).trainer_args
        assert args["save_strategy"] == "steps" and 0 < args["save_steps"] < args["max_steps"], name
        assert args["save_total_limit"] >= 1


def test_a_recipe_without_save_settings_checkpoints_every_tenth_of_the_run(tmp_path, one_thread):
    raw = yaml.safe_load(shipped_recipes()["tiny-dpo"].read_text())
    for key in checkpointing.SAVE_KEYS:
        raw["dpo"].pop(key)
    raw["dpo"].update(max_steps=20, disable_tqdm=True)
    raw["data"]["train"]["path"] = str(shipped_recipes()["tiny-dpo"].parent / raw["data"]["train"]["path"])
    path = tmp_path / "no-save.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path), "--output-dir", str(tmp_path / "out")]) == 0
    assert checkpoint_steps(tmp_path / "out") == [18, 20]  # every 2 steps, the last two kept

    raw["dpo"]["save_strategy"] = "no"  # a recipe that says something about saving is taken as it is
    path.write_text(yaml.safe_dump(raw))
    assert checkpointing.checkpoint_defaults(load_recipe(path)) == {}


def test_the_default_interval_is_capped_on_long_runs():
    from transformers import TrainerState

    callback = checkpointing._callback(type("T", (), {})(), cap_interval=True)
    state = TrainerState(save_steps=2_000)  # 10% of a 20,000-step run
    callback.on_train_begin(None, state, None)
    assert state.save_steps == checkpointing.DEFAULT_MAX_SAVE_INTERVAL


# -- a save that fails ------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["checkpoint-4", "final"])
def test_a_full_disk_is_a_clear_error_and_the_last_checkpoint_stays_intact(tmp_path, capsys, monkeypatch, one_thread, failing):
    import torch

    out = tmp_path / "run"
    real_save = torch.save
    intact = {}

    def save(obj, f, *args, **kwargs):
        path = Path(str(f))
        if (failing == "final" and path.parent == out) or path.parent.name == failing:
            if failing != "final":  # what the last good checkpoint holds when the disk fills
                intact.update(snapshot(out / "checkpoint-2"))
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    steps = "4" if failing == "final" else "6"
    code = main(["train", "tiny-dpo", "--output-dir", str(out), "--set", f"dpo.max_steps={steps}", "--set", "dpo.save_steps=2",
                 "--set", "dpo.save_total_limit=1" if failing == "final" else "dpo.save_total_limit=2", *QUIET])
    err = capsys.readouterr().err
    assert code == 1, err
    what = f"could not save checkpoint {out / 'checkpoint-4'}" if failing != "final" else f"could not save the trained model to {out}"
    assert what in err and "No space left on device" in err and "free on that disk" in err, err
    assert "Traceback" not in err
    last = out / ("checkpoint-2" if failing != "final" else "checkpoint-4")
    assert f"the last complete checkpoint is {last}" in err
    assert checkpointing.last_checkpoint(out) == str(last)
    if failing != "final":
        assert not (out / "checkpoint-4").exists()  # the half-written one was removed
        assert snapshot(out / "checkpoint-2") == intact
    assert not (out / "run_info.json").exists()
