"""``trl-plus launch``: the accelerate command it builds for every shipped config, as
accelerate's own launch parser reads it, and its errors."""

from __future__ import annotations

import shlex
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
