"""The CLI end to end: plugins, train (also under accelerate launch), exit codes."""

import json
import os
import subprocess
import sys

from transformers import AutoModelForCausalLM

from trl_plus.cli import main


def test_plugins_lists_every_builtin_component(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    components = {}
    for row in rows:
        for kind, names in row["components"].items():
            components.setdefault(kind, set()).update(names)
    assert {"reward_model", "python", "http"} <= components["reward_sources"]
    assert {"constant", "linear", "cosine", "adaptive"} <= components["kl_schedules"]
    assert {"length", "dedup", "distinct_pair", "min_reward_margin", "regex"} <= components["data_filters"]
    assert main(["plugins"]) == 0
    assert "kl schedules: adaptive" in capsys.readouterr().out


def test_train_tiny_dpo(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "tiny-dpo", "--output-dir", str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama"
    report = json.loads((out / "filter_report.json").read_text())
    assert report["train"]["rows_in"] == 240 and report["train"]["rows_out"] <= 240
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [row for row in history if "loss" in row]
    assert len(steps) >= 5 and all("beta" in row for row in history)
    assert steps[-1]["rewards/margins"] > steps[0]["rewards/margins"]
    assert (out / "recipe.yaml").exists()


def test_run_failure_exit_code_and_no_traceback(tmp_path, capsys):
    bad = tmp_path / "bad_reward.py"
    bad.write_text("def score(prompts, completions):\n    return [float('nan')] * len(completions)\n")
    args = ["train", "tiny-dpo", "--output-dir", str(tmp_path / "o"),
            "--set", "filters.3={name: min_reward_margin, source: {name: python, function: '%s:score'}}" % bad]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"reward source min_reward_margin.source[0] (python: {bad}:score) returned nan" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_missing_data_file_is_a_user_error(tmp_path, capsys):
    assert main(["train", "tiny-dpo", "--set", "data.train.path=nowhere.jsonl", "--output-dir", str(tmp_path)]) == 2
    assert "data.train.path: file not found" in capsys.readouterr().err


def test_accelerate_launch(tmp_path):
    out = tmp_path / "acc"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "trl_plus", "train", "tiny-dpo",
           "--output-dir", str(out), "--set", "dpo.max_steps=3"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "model.safetensors").exists() and (out / "trainer_state.json").exists()


def test_debug_shows_the_traceback(capsys):
    assert main(["--debug", "validate", "tiny-dpo", "--set", "kl.name=adaptiv"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "Did you mean: adaptive?" in err


def test_bad_rows_exit_2_naming_the_row(tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "a"}\n{"prompt": null}\n')
    assert main(["train", "tiny-ppo", "--set", f"data.train.path={data}", "--output-dir", str(tmp_path / "o")]) == 2
    assert "train dataset row 1: column 'prompt' is None" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model.safetensors").exists()
