"""A run's output folder and the run's life: files that are not a run's, two runs at once,
stale locks, a refused --resume, a diverging run, a signal during the final save, the
recipe being run, and paths that cannot be an output folder."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trl_plus import checkpointing, run_folder
from trl_plus.cli import main
from trl_plus.errors import RunFolderError
from trl_plus.recipe import load_recipe, shipped_recipes

from test_checkpointing import fake_run, snapshot  # noqa: E402 - tests/ is on sys.path

QUIET = ["--set", "dpo.disable_tqdm=true"]
ONE_STEP = ["--set", "dpo.max_steps=1", *QUIET]
HOLD = """
import sys, time
from trl_plus.run_folder import claim
with claim(sys.argv[1], "dpo"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def one_line_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("trl-plus: error: "), err
    return err


def errors_of(err: str) -> str:
    """stderr without the "--- Logging error ---" reports of a library's log handler left
    pointing at an earlier test's captured (now closed) stderr: not the run's output."""
    return re.sub(r"--- Logging error ---.*?\nArguments: [^\n]*\n", "", err, flags=re.S)


def nothing_loads(monkeypatch) -> None:
    """Fail the test if a model or tokenizer starts loading."""
    import trl_plus.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model loaded before the folder was checked")

    monkeypatch.setattr(loading, "load_model", refuse)
    monkeypatch.setattr(loading, "load_tokenizer", refuse)


def project_folder(folder: Path, name: str = "tiny-dpo.yaml", comment: str = "") -> Path:
    """A user's folder holding a copy of the tiny DPO recipe and its data/."""
    source = shipped_recipes()["tiny-dpo"]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source.parent / "data", folder / "data", dirs_exist_ok=True)
    (folder / name).write_text(comment + source.read_text())
    return folder / name


def holder(out: Path, seconds: float = 60) -> subprocess.Popen:
    """Another process that claims ``out`` and holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# -- case 2: files that are not a run's ------------------------------------------------------------


def test_files_that_are_not_a_run_are_refused_before_anything_loads(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "folder"
    recipe = project_folder(folder)
    (folder / "README.md").write_text("# my notes\n")
    (folder / "config.json").write_text('{"mine": true}\n')
    before = snapshot(folder)
    nothing_loads(monkeypatch)
    err = one_line_error(capsys, "train", str(recipe), "--output-dir", str(folder))
    assert f"{folder} holds files that training would overwrite and that are not from a trl-plus run " \
           "(README.md, config.json)" in err, err
    assert "another --output-dir" in err and "--overwrite" in err
    assert snapshot(folder) == before  # not even a lock file came and went


def test_a_folder_holding_only_the_recipe_and_its_data_is_fine(tmp_path, capsys, one_thread):
    folder = tmp_path / "folder"
    recipe = project_folder(folder)
    before = recipe.read_bytes()
    assert main(["train", str(recipe), "--output-dir", str(folder), *ONE_STEP]) == 0, capsys.readouterr().err
    assert recipe.read_bytes() == before and (folder / "data").is_dir()
    assert (folder / "model.safetensors").exists() and not (folder / run_folder.LOCK).exists()


def test_overwrite_of_another_trainers_run_leaves_nothing_of_it(tmp_path, capsys, one_thread):
    out = fake_run(tmp_path / "ppo-run", "trainer_state.json", "ppo_state.json", "checkpoint-3/")
    (out / "critic").mkdir()
    (out / "critic" / "model.safetensors").write_bytes(b"critic")
    (out / "notes.txt").write_text("mine")  # not a file a run writes: stays
    assert main(["train", "tiny-dpo", "--output-dir", str(out), "--overwrite", *ONE_STEP]) == 0, capsys.readouterr().err
    assert not (out / "critic").exists() and not (out / "ppo_state.json").exists()
    assert not (out / "checkpoint-3").exists() and (out / "notes.txt").read_text() == "mine"
    assert run_folder.folder_trainer(out) == "dpo"


# -- case 3: two runs into one folder --------------------------------------------------------------


def test_a_folder_in_use_by_another_run_is_refused_naming_it(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out" / "x"
    proc = holder(out)
    try:
        nothing_loads(monkeypatch)
        for extra in ([], ["--overwrite"], ["--resume"]):
            err = one_line_error(capsys, "train", "tiny-dpo", "--output-dir", str(out), *extra)
            assert f"{out} is in use by another run (pid {proc.pid} on this host" in err, err
    finally:
        proc.kill()
        proc.wait()


def test_the_claim_is_atomic(tmp_path):
    out = tmp_path / "contested"
    code = ("import sys, time\nfrom trl_plus.run_folder import claim\nfrom trl_plus.errors import RunFolderError\n"
            "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
            "try:\n    with claim(sys.argv[1], 'dpo'):\n        print('won', flush=True); time.sleep(1.5)\n"
            "except RunFolderError as exc:\n    print('lost:', exc, flush=True)\n")
    start = time.time() + 1.0  # all of them at once
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out), str(start)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert sum(o.startswith("won") for o in outputs) == 1, outputs
    assert all("is in use by another run" in o for o in outputs if not o.startswith("won")), outputs
    assert not (out / run_folder.LOCK).exists()  # released at the end


def test_a_stale_lock_is_taken_over_and_one_from_another_host_is_not(tmp_path, caplog):
    out = tmp_path / "crashed"
    proc = holder(out)
    proc.kill()  # SIGKILL: the lock file stays, its flock goes with the process
    proc.wait()
    assert json.loads((out / run_folder.LOCK).read_text())["pid"] == proc.pid
    with caplog.at_level(logging.WARNING, logger="trl_plus"):
        with run_folder.claim(out, "dpo"):
            assert json.loads((out / run_folder.LOCK).read_text())["pid"] == os.getpid()
    assert f"taking over {out}: the run that held it (pid {proc.pid} on this host" in caplog.text
    assert not (out / run_folder.LOCK).exists()

    (out / run_folder.LOCK).write_text(json.dumps({"pid": 12, "host": "elsewhere", "started": "then"}))
    with pytest.raises(RunFolderError, match=r"claimed by a run on another host \(pid 12 on host elsewhere.*delete"):
        with run_folder.claim(out, "dpo"):
            pass


def test_only_the_main_process_claims(tmp_path, monkeypatch):
    out = tmp_path / "shared"
    proc = holder(out)  # rank 0 holds it
    try:
        monkeypatch.setenv("RANK", "1")
        with run_folder.claim(out, "dpo") as resume:  # another rank of the same launch: not refused
            assert resume is None
        assert json.loads((out / run_folder.LOCK).read_text())["pid"] == proc.pid  # rank 0's lock untouched
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_is_held_for_the_run_and_released_after(tmp_path, capsys, monkeypatch, one_thread):
    out = tmp_path / "run"
    seen = {}
    real = checkpointing.train

    def spy(trainer, *args, **kwargs):
        seen["lock"] = json.loads((out / run_folder.LOCK).read_text())
        return real(trainer, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "train", spy)
    assert main(["train", "tiny-dpo", "--output-dir", str(out), *ONE_STEP]) == 0, capsys.readouterr().err
    assert seen["lock"]["pid"] == os.getpid() and seen["lock"]["trainer"] == "dpo"
    assert not (out / run_folder.LOCK).exists()
    assert json.loads((out / "run_info.json").read_text())["trainer"] == "dpo"


# -- case 4: a refused --resume leaves the run as it was -------------------------------------------


@pytest.mark.parametrize("recipe, files, said", [
    ("tiny-dpo", ["ppo_state.json"], "is a PPO checkpoint (it has critic/) and the recipe tiny-dpo.yaml trains DPO"),
    ("tiny-ppo", ["dpo_state.json"],
     "is a DPO checkpoint (it has dpo_state.json) and the recipe tiny-ppo.yaml trains PPO"),
])
def test_resume_of_the_other_trainers_run_is_refused_untouched(tmp_path, capsys, monkeypatch, recipe, files, said):
    out = fake_run(tmp_path / "run", "trainer_state.json", "filter_report.json", "checkpoint-3/")
    for name in files:
        (out / "checkpoint-3" / name).write_text("{}")
    if recipe == "tiny-dpo":
        (out / "checkpoint-3" / "critic").mkdir()
    before = snapshot(out)
    nothing_loads(monkeypatch)
    err = one_line_error(capsys, "train", recipe, "--output-dir", str(out), "--resume")
    assert f"--resume: {out / 'checkpoint-3'} {said}" in err and "another --output-dir" in err, err
    assert snapshot(out) == before


def test_a_real_dpo_run_refuses_a_ppo_resume_untouched(tmp_path, capsys, one_thread):
    out = tmp_path / "dpo-run"
    assert main(["train", "tiny-dpo", "--output-dir", str(out), "--set", "dpo.max_steps=1", *QUIET]) == 0
    capsys.readouterr()
    before = snapshot(out)
    err = one_line_error(capsys, "train", "tiny-ppo", "--output-dir", str(out), "--resume")
    assert "is a DPO checkpoint" in err
    assert f"resume it with the recipe it was trained with ({out / 'recipe.yaml'})" in err
    assert snapshot(out) == before


def test_the_trainer_of_a_checkpoint_is_read_from_its_log_or_its_run(tmp_path):
    out = fake_run(tmp_path / "run", "checkpoint-3/")
    checkpoint = out / "checkpoint-3"
    assert run_folder.checkpoint_trainer(checkpoint) is None  # nothing tells: resumed as asked
    (out / "run_info.json").write_text(json.dumps({"trainer": "ppo"}))
    assert run_folder.checkpoint_trainer(checkpoint) == "ppo"
    state = {"global_step": 3, "log_history": [{"loss": 0.6, "beta": 0.1, "step": 1}]}
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    assert run_folder.checkpoint_trainer(checkpoint) == "dpo"  # the checkpoint's own log first
    with pytest.raises(RunFolderError, match="is a DPO checkpoint \\(its log has beta\\)"):
        checkpointing.prepare_output_dir(out, True, trainer="ppo")


def test_a_resume_that_fails_later_puts_back_what_it_rewrote(tmp_path, capsys, monkeypatch, one_thread):
    from trl_plus.trainers.dpo import DPOTrainer

    out = tmp_path / "run"
    assert main(["train", "tiny-dpo", "--output-dir", str(out), "--set", "dpo.max_steps=1", *QUIET]) == 0
    report = out / "filter_report.json"
    report.write_text('{"the run": "as it was"}')  # so that a rewrite would show

    def broken(self, checkpoint, model=None):
        raise ValueError("loaded state dict has a different number of parameter groups")

    monkeypatch.setattr(DPOTrainer, "_load_from_checkpoint", broken)
    with pytest.raises(ValueError):
        main(["train", "tiny-dpo", "--output-dir", str(out), "--resume", "--set", "dpo.max_steps=2", *QUIET])
    assert report.read_text() == '{"the run": "as it was"}'
    assert not (out / run_folder.LOCK).exists()


# -- case 5: a run that diverges -----------------------------------------------------------------------


@pytest.mark.parametrize("recipe, section", [("tiny-dpo", "dpo"), ("tiny-ppo", "ppo")])
def test_a_diverging_run_stops_naming_the_step_and_saves_no_nan_model(tmp_path, capsys, one_thread, recipe, section):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    sets = {"max_steps": 4, "save_steps": 1, "logging_steps": 1, "disable_tqdm": "true", "learning_rate": "1.0e+30"}
    argv = ["train", recipe, "--output-dir", str(out)]
    for key, value in sets.items():
        argv += ["--set", f"{section}.{key}={value}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "trl-plus: error: training diverged at step 2: the loss is nan" in err, err
    assert f"Lower {section}.learning_rate (it is 1e+30)" in err and "Traceback" not in errors_of(err)
    assert not (out / "model.safetensors").exists() and not (out / "run_info.json").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]  # none of step 2 or later
    import torch

    for tensor in load_file(out / "checkpoint-1" / "model.safetensors").values():
        assert torch.isfinite(tensor).all()
    assert not (out / run_folder.LOCK).exists()


def test_weights_that_are_not_finite_are_never_saved(tmp_path, plugin_manager, register_plugin, one_thread):
    import torch

    import trl_plus
    from trl_plus.trainers.dpo import train_from_recipe

    class Corrupt:
        @trl_plus.hookimpl
        def trl_plus_step_end(self, trainer, step, metrics):
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("inf"))

    register_plugin(Corrupt())
    settings = ("max_steps=2", "save_steps=1", "logging_steps=1", "disable_tqdm=true")
    recipe = load_recipe("tiny-dpo", [f"dpo.{s}" for s in settings])
    out = tmp_path / "run"
    with pytest.raises(checkpointing.TrainingDiverged, match="diverged at step 1: the weights hold NaN or infinite"):
        train_from_recipe(recipe, str(out), hooks=plugin_manager)
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()


def test_an_infinite_gradient_of_a_skipped_fp16_step_is_not_a_divergence():
    import torch

    accelerator = type("A", (), {"optimizer_step_was_skipped": True, "num_processes": 1})()
    callback = checkpointing._callback(type("T", (), {"accelerator": accelerator})(), cap_interval=False)
    callback.note_loss(torch.tensor(0.7))
    callback.note_grad_norm(torch.tensor(float("inf")))
    assert callback._not_finite() is None
    accelerator.optimizer_step_was_skipped = False
    callback.note_loss(torch.tensor(0.7))
    callback.note_grad_norm(float("nan"))
    assert callback._not_finite() == "the gradient norm is nan"


# -- case 19 and the recipe's copy ----------------------------------------------------------------------


def test_the_recipe_being_run_is_never_overwritten(tmp_path, capsys, one_thread):
    folder = tmp_path / "exp"
    recipe = project_folder(folder, "recipe.yaml", comment="# my notes on this experiment\n")
    before = recipe.read_bytes()
    argv = ["train", str(recipe), "--output-dir", str(folder), "--overwrite", "--set", "dpo.beta=0.2", *ONE_STEP]
    assert main(argv) == 0, capsys.readouterr().err
    assert recipe.read_bytes() == before  # comments and all
    resolved = yaml.safe_load((folder / run_folder.RESOLVED_RECIPE).read_text())
    assert resolved["dpo"]["beta"] == 0.2 and resolved["trainer"] == "dpo"


def test_the_recipe_copy_is_left_out_when_the_recipe_there_says_it_all(tmp_path):
    recipe = load_recipe("tiny-dpo")
    (tmp_path / "recipe.yaml").write_text(recipe.to_yaml())
    same = load_recipe(tmp_path / "recipe.yaml")
    assert run_folder.recipe_copy_name(same, tmp_path) is None
    assert run_folder.recipe_copy_name(recipe, tmp_path / "elsewhere") == "recipe.yaml"


# -- SIGTERM during the final save ------------------------------------------------------------------------


@pytest.mark.parametrize("signals", [1, 2])
def test_a_signal_during_the_final_save(tmp_path, capsys, monkeypatch, one_thread, signals):
    from trl_plus.trainers import from_recipe

    real = from_recipe.save_run

    def save_run(*args, **kwargs):
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(from_recipe, "save_run", save_run)
    out = tmp_path / "run"
    code = main(["train", "tiny-dpo", "--output-dir", str(out), "--set", "dpo.max_steps=2", "--set", "dpo.save_steps=1",
                 *QUIET])
    err = capsys.readouterr().err
    assert code == 143 and "Traceback" not in errors_of(err), err
    if signals == 1:
        assert f"interrupted by SIGTERM during the final save, which was finished first: the run is complete, " \
               f"saved to {out}" in err, err
        assert (out / "recipe.yaml").exists() and json.loads((out / "run_info.json").read_text())["global_step"] == 2
        assert "resume with" not in err
    else:
        assert "stopped at once by a second SIGTERM at step 2, without saving; the last complete checkpoint is " \
               f"{out / 'checkpoint-2'}" in err, err
        assert not (out / "run_info.json").exists() and "--resume" in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert not (out / run_folder.LOCK).exists()


# -- paths that cannot be an output folder ------------------------------------------------------------------


def test_paths_that_cannot_be_an_output_folder(tmp_path, capsys, monkeypatch):
    nothing_loads(monkeypatch)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = {
        str(a_file): f"--output-dir: {a_file} is a file, not a folder",
        str(a_file / "run"): f"--output-dir: cannot create {a_file / 'run'}: {a_file} is a file, not a folder",
        str(tmp_path / ("n" * 300)): "--output-dir: a name in the path is 300 bytes long",
        str(tmp_path / "/".join(["d" * 200] * 25)): "bytes long; this system allows 4095",
    }
    before = snapshot(tmp_path)
    for out, said in cases.items():
        assert said in one_line_error(capsys, "train", "tiny-dpo", "--output-dir", out)
    assert snapshot(tmp_path) == before


def test_a_read_only_output_folder_is_refused(tmp_path, capsys, monkeypatch):
    nothing_loads(monkeypatch)
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the permission count, as it does for users
        real = os.access

        def access(path, mode, **kwargs):
            return False if Path(path) == locked and mode & os.W_OK else real(path, mode, **kwargs)

        monkeypatch.setattr(os, "access", access)
    try:
        err = one_line_error(capsys, "train", "tiny-dpo", "--output-dir", str(locked))
        assert f"--output-dir: {locked} is read-only (no write permission)" in err, err
        err = one_line_error(capsys, "train", "tiny-dpo", "--output-dir", str(locked / "run"))
        assert f"cannot create {locked / 'run'}: {locked} is read-only" in err, err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_the_model_being_trained_is_not_an_output_folder(tmp_path, capsys, monkeypatch, tiny_model_path):
    nothing_loads(monkeypatch)
    before = snapshot(Path(tiny_model_path))
    err = one_line_error(capsys, "train", "tiny-dpo", "--set", f"model.name_or_path={tiny_model_path}",
                         "--output-dir", str(tiny_model_path), "--overwrite")
    assert f"{tiny_model_path} is the recipe's model.name_or_path" in err and "write over what it loads" in err, err
    assert snapshot(Path(tiny_model_path)) == before


def test_a_broken_link_is_not_an_output_folder(tmp_path, capsys, monkeypatch):
    nothing_loads(monkeypatch)
    link = tmp_path / "runs"
    link.symlink_to(tmp_path / "gone" / "disk")
    for out in (link, link / "x"):
        err = one_line_error(capsys, "train", "tiny-dpo", "--output-dir", str(out))
        assert f"--output-dir: {link} is a broken link (to {tmp_path / 'gone' / 'disk'})" in err, err
    assert not (tmp_path / "gone").exists()


def test_a_second_signal_stops_at_once_naming_the_last_checkpoint(tmp_path):
    out = fake_run(tmp_path / "run", "checkpoint-3/")
    args, state = type("A", (), {"output_dir": str(out)})(), type("S", (), {"global_step": 5})()
    trainer = type("T", (), {"args": args, "state": state})()
    callback = checkpointing._callback(trainer, cap_interval=False)
    callback.handle(signal.SIGTERM, None)
    with pytest.raises(checkpointing.TrainingInterrupted) as stopped:
        callback.handle(signal.SIGTERM, None)
    assert stopped.value.how == "at_once" and stopped.value.exit_code == 143
    assert stopped.value.checkpoint == str(out / "checkpoint-3") and stopped.value.step == 5


def test_resume_from_another_folder_into_a_used_one_is_refused(tmp_path, capsys, monkeypatch):
    nothing_loads(monkeypatch)
    source = fake_run(tmp_path / "source", "trainer_state.json", "checkpoint-3/")
    (source / "checkpoint-3" / "dpo_state.json").write_text("{}")
    used = fake_run(tmp_path / "used", "trainer_state.json")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("# mine")
    for out, said in ((used, "already holds a run (trainer_state.json)"), (mine, "holds files that training would "
                      "overwrite and that are not from a trl-plus run (README.md)")):
        before = snapshot(out)
        err = one_line_error(capsys, "train", "tiny-dpo", "--output-dir", str(out), "--resume",
                             str(source / "checkpoint-3"))
        assert f"{out} {said}; to continue {source / 'checkpoint-3'} elsewhere, give an empty --output-dir" in err, err
        assert snapshot(out) == before
