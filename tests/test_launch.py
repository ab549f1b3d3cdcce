"""``trl-plus launch``: the accelerate command it builds for every shipped config, as
accelerate's own launch parser reads it, and its errors."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser

from trl_plus.cli import main
from trl_plus.launching import launch_command, shipped_accelerate_configs

CONFIGS = shipped_accelerate_configs()


def _dry_run(capsys, *argv) -> list[str]:
    assert main(["launch", *argv, "--dry-run"]) == 0
    return shlex.split(capsys.readouterr().out.strip())


def _accelerate_args(argv: list[str]):
    """What ``accelerate launch`` makes of the command: its parser, then its own merge of
    the config file into the arguments."""
    start = argv.index("--config_file")
    args = launch_command_parser().parse_args(argv[start:])
    return args, _validate_launch_command(args)[0]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_dry_run_prints_an_accelerate_command_for_every_shipped_config(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = _dry_run(capsys, "tiny-dpo", "--accelerate-config", name, "--set", "dpo.beta=0.2", "--set", "dpo.max_steps=3")
    args, merged = _accelerate_args(argv)
    assert Path(args.config_file) == CONFIGS[name]
    assert args.module and args.training_script == "trl_plus"
    assert args.training_script_args == ["train", "tiny-dpo", "--output-dir", str(tmp_path / "runs" / "tiny-dpo"),
                                         "--set", "dpo.beta=0.2", "--set", "dpo.max_steps=3"]
    assert "--num_processes" not in argv  # the config's own count
    assert merged.num_processes == yaml.safe_load(CONFIGS[name].read_text())["num_processes"]


def test_dry_run_passes_processes_output_dir_and_resume(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    custom = tmp_path / "my.yaml"
    custom.write_text(CONFIGS["multi_gpu"].read_text())
    argv = _dry_run(capsys, "tiny-ppo", "--accelerate-config", "my.yaml", "--num-processes", "4",
                    "--output-dir", "out", "--resume")
    args, merged = _accelerate_args(argv)
    assert Path(args.config_file) == custom and merged.num_processes == 4 and merged.multi_gpu
    assert args.training_script_args == ["train", "tiny-ppo", "--output-dir", str(tmp_path / "out"), "--resume"]
    (tmp_path / "out" / "checkpoint-3").mkdir(parents=True)
    argv = _dry_run(capsys, "tiny-ppo", "--accelerate-config", "fsdp", "--resume", "out/checkpoint-3")
    assert argv[-2:] == ["--resume", str(tmp_path / "out" / "checkpoint-3")]


def test_a_recipe_file_is_passed_by_absolute_path(capsys, tmp_path, monkeypatch):
    from trl_plus.recipe import shipped_recipes

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(shipped_recipes()["tiny-dpo"].read_text().replace("data/", str(
        shipped_recipes()["tiny-dpo"].parent / "data") + "/"))
    argv = _dry_run(capsys, "mine.yaml", "--accelerate-config", "cpu")
    assert _accelerate_args(argv)[0].training_script_args[1] == str(tmp_path / "mine.yaml")


def test_unknown_accelerate_config_lists_the_shipped_ones(capsys):
    assert main(["launch", "tiny-dpo", "--accelerate-config", "zero3", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--accelerate-config: no accelerate config file 'zero3'" in err
    assert all(name in err for name in CONFIGS) and "Traceback" not in err


def test_broken_accelerate_config_is_named(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\nnot_an_accelerate_key: 1\n")
    assert main(["launch", "tiny-dpo", "--accelerate-config", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "accelerate cannot read" in err and "bad.yaml" in err


def test_launch_checks_the_recipe_first(capsys):
    assert main(["launch", "tiny-dpo", "--accelerate-config", "cpu", "--dry-run", "--set", "dpo.bta=1"]) == 2
    assert "dpo.bta" in capsys.readouterr().err
    assert main(["launch", "quickstart", "--accelerate-config", "multi_gpu", "--dry-run"]) == 2
    assert "launcher:" in capsys.readouterr().err


def test_torchrun_command_runs_trl_plus_train_on_n_processes():
    cmd = launch_command(["tiny-dpo", "--output-dir", "/o"], "torchrun", num_processes=2)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in cmd
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2"
    assert cmd[-6:] == ["-m", "trl_plus", "train", "tiny-dpo", "--output-dir", "/o"]


def test_launch_runs_the_command_and_reports_its_failure(capsys, monkeypatch):
    import subprocess

    seen = []

    class Done:
        returncode = 3

    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: seen.append(cmd) or Done())
    assert main(["launch", "tiny-dpo", "--accelerate-config", "cpu"]) == 1
    assert seen and seen[0][-4:-1] == ["train", "tiny-dpo", "--output-dir"]
    assert "exited with code 3" in capsys.readouterr().err


# -- a pipeline's launcher: section -------------------------------------------------------

# The quickstart cut to one DPO run: sft, pairs, dpo, eval, report, on a few dozen rows.
TINY_PIPELINE = [
    "stages.seeds=[0]", "stages.checkpoints=2", "stages.corpus.reviews=600", "stages.corpus.prompts=64",
    "stages.corpus.eval_prompts=8", "stages.corpus.val_prompts=8", "stages.sft.model.hidden_size=32",
    "stages.sft.model.num_layers=1", "stages.pairs.max_new_tokens=8", "stages.reward=null", "stages.ppo=null",
    "stages.dpo.args.max_steps=2", "stages.dpo.args.per_device_train_batch_size=8",
    "eval.generation.max_new_tokens=8", "eval.kl.num_samples=1", "eval.tasks=[]",
]


def compare_args(out, *overrides) -> list[str]:
    return ["compare", "quickstart", "--out", str(out), "--no-progress"] + [
        a for s in TINY_PIPELINE + list(overrides) for a in ("--set", s)]


@pytest.mark.parametrize(
    "override, key, says",
    [
        ("launcher.accelerate_config=zero3", "launcher.accelerate_config", "Shipped: cpu"),
        ("launcher.num_processes=0", "launcher.num_processes", "greater than or equal to 1"),
        ("launcher.command=mpirun", "launcher.command", "accelerate"),
        ("launcher.command=torchrun", "launcher.num_processes", "number of processes"),
        ("launcher.gpus=8", "launcher.gpus", "unknown key"),
    ],
)
def test_launcher_section_errors_name_the_key(override, key, says, capsys):
    assert main(["validate", "quickstart", "--set", override]) == 2
    err = capsys.readouterr().err
    assert f"error: {key}:" in err and says in err


def test_launcher_section_is_for_pipelines(capsys):
    assert main(["validate", "tiny-dpo", "--set", "launcher.accelerate_config=cpu"]) == 2
    err = capsys.readouterr().err
    assert "error: launcher: is for pipeline recipes" in err and "trl-plus launch" in err


def test_launcher_config_resolves_against_the_recipe(tmp_path):
    from trl_plus.pipeline.config import parse
    from trl_plus.recipe import load_recipe, shipped_recipes

    (tmp_path / "acc.yaml").write_text(CONFIGS["multi_gpu"].read_text())
    recipe = tmp_path / "pipe.yaml"
    recipe.write_text(shipped_recipes()["quickstart"].read_text() + "\nlauncher: {accelerate_config: acc.yaml}\n")
    launcher = parse(load_recipe(recipe)).launcher
    assert launcher.accelerate_config == str(tmp_path / "acc.yaml") and launcher.num_processes is None
    assert parse(load_recipe("quickstart")).launcher is None  # no section: runs train in this process


@pytest.mark.slow
def test_pipeline_launcher_launches_every_run_and_resumes(tmp_path, monkeypatch, capsys, one_thread):
    """Each policy run is a `trl-plus train` command under accelerate launch (here run in this
    process by a stand-in for the subprocess); an interrupted run resumes from its checkpoint."""
    import subprocess

    calls = []

    class Finished:
        def __init__(self, code):
            self.returncode = code

    def launched(cmd, **kwargs):
        calls.append(cmd)
        argv = cmd[cmd.index("trl_plus") + 1:]
        code = main(argv)
        if len(calls) > 1:
            return Finished(code)
        # The first one is "interrupted" between its two checkpoints.
        shutil.rmtree(Path(argv[argv.index("--output-dir") + 1]) / "checkpoint-2")
        return Finished(130)

    monkeypatch.setattr(subprocess, "run", launched)
    out = tmp_path / "run"
    args = compare_args(out, "launcher.accelerate_config=cpu", "launcher.num_processes=1")
    assert main(args) == 130
    run = out / "dpo" / "beta0.1-seed0"
    assert (run / "checkpoint-1").is_dir() and not (run / "done.json").exists()
    args_, merged = _accelerate_args(calls[0])
    assert Path(args_.config_file) == CONFIGS["cpu"] and merged.num_processes == 1
    # a fresh start overwrites the run's own folder; the unredacted recipe it reads lives only
    # for the launched training's life, the run's recipe.yaml is the copy the training writes
    assert args_.training_script_args == ["train", str(run / ".launch-recipe.yaml"), "--output-dir", str(run),
                                          "--overwrite"]
    assert not (run / ".launch-recipe.yaml").exists()

    capsys.readouterr()
    assert main(args) == 0
    console = capsys.readouterr().out
    assert "sft" in console and "done already: skipped" in console
    assert calls[1][-2:] == ["--resume", str(run / "checkpoint-1")] and len(calls) == 2
    marker = json.loads((run / "done.json").read_text())
    assert marker["global_step"] == 2 and marker["tokens"]
    assert (run / "recipe.yaml").exists() and not (run / ".launch-recipe.yaml").exists()
    assert len(list((out / "eval" / "dpo" / "beta0.1-seed0").glob("step-*/eval.json"))) == 2
    assert (out / "report" / "report.md").exists()

    assert main(args) == 0 and len(calls) == 2  # finished runs are not launched again


def test_a_failed_launched_run_shows_its_log(tmp_path, monkeypatch, capsys, one_thread):
    import subprocess

    def failing(cmd, stdout=None, **kwargs):
        stdout.write("Traceback ...\nCUDA out of memory\n")
        return type("Finished", (), {"returncode": 1})()

    monkeypatch.setattr(subprocess, "run", failing)
    assert main(compare_args(tmp_path / "run", "launcher.accelerate_config=cpu")) == 1
    err = capsys.readouterr().err
    assert "exited with code 1" in err and "CUDA out of memory" in err and "launch.log" in err
