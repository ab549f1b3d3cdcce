"""Interrupted runs, for real: ``trl-plus train`` in a subprocess stopped by SIGINT/SIGTERM
(a checkpoint, exit 130/143) or SIGKILL (the last periodic checkpoint), then ``--resume``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trl_plus.cli import main

SECTION = {"tiny-dpo": "dpo", "tiny-ppo": "ppo"}
LONG = 100_000  # max_steps no test waits for


def start(recipe: str, out: Path, **settings) -> subprocess.Popen:
    """``trl-plus train RECIPE`` in a subprocess, its output in OUT.stdout / OUT.stderr."""
    sets = {"max_steps": LONG, "logging_steps": 1, "disable_tqdm": "true", **settings}
    cmd = [sys.executable, "-m", "trl_plus", "train", recipe, "--output-dir", str(out)]
    for key, value in sets.items():
        cmd += ["--set", f"{SECTION[recipe]}.{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(out.parent / f"{out.name}.stdout", "w") as stdout, open(out.parent / f"{out.name}.stderr", "w") as stderr:
        return subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)


def output(out: Path, kind: str) -> str:
    return (out.parent / f"{out.name}.{kind}").read_text()


def wait_until(done, proc: subprocess.Popen, out: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            pytest.fail(f"the run ended early ({proc.returncode}): {output(out, 'stderr')[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run did not get there in time")
        time.sleep(0.02)


def kill_after_checkpoint(proc: subprocess.Popen, out: Path) -> tuple[int, Path]:
    """Wait for the run's first complete checkpoint, SIGKILL it, and return its last complete
    checkpoint (step, folder): what a ``--resume`` after the kill starts from."""
    wait_until(lambda: complete_checkpoints(out), proc, out)
    proc.kill()  # SIGKILL
    proc.wait(timeout=60)
    saved = complete_checkpoints(out)
    step = max(saved)
    return step, saved[step]


def complete_checkpoints(out: Path) -> dict[int, Path]:
    """Checkpoints whose trainer state is fully written (the test's own reading of "complete")."""
    found = {}
    for folder in out.glob("checkpoint-*"):
        try:
            step = json.loads((folder / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError):
            continue
        found[step] = folder
    return found


def assert_loadable_checkpoint(folder: Path, recipe: str) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= {p.name for p in folder.iterdir()}
    AutoModelForCausalLM.from_pretrained(folder)
    if recipe == "tiny-ppo":
        AutoModelForSequenceClassification.from_pretrained(folder / "critic", num_labels=1)
        assert "kl_coef" in json.loads((folder / "ppo_state.json").read_text())


@pytest.mark.parametrize("recipe, signum, code", [
    ("tiny-dpo", signal.SIGINT, 130), ("tiny-dpo", signal.SIGTERM, 143), ("tiny-ppo", signal.SIGINT, 130),
])
def test_a_signal_saves_a_checkpoint_and_exits(tmp_path, recipe, signum, code):
    out = tmp_path / "run"
    proc = start(recipe, out, save_steps=LONG)  # no periodic checkpoint: the only one is the signal's
    wait_until(lambda: "'loss'" in output(out, "stdout"), proc, out)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == code
    err = output(out, "stderr")
    step = int(re.search(r"interrupted by SIG\w+ at step (\d+); saved checkpoint (\S+)", err).group(1))
    checkpoint = out / f"checkpoint-{step}"
    assert f"saved checkpoint {checkpoint}" in err and f"--output-dir {out} --resume" in err, err[-2000:]
    assert list(out.glob("checkpoint-*")) == [checkpoint] and step >= 1
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    assert_loadable_checkpoint(checkpoint, recipe)
    assert not (out / "model.safetensors").exists()  # an interrupted run is not a finished one


@pytest.mark.parametrize("recipe", ["tiny-dpo", "tiny-ppo"])
def test_after_sigkill_resume_continues_from_the_last_checkpoint(tmp_path, monkeypatch, capsys, one_thread, recipe):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    proc = start(recipe, out, save_steps=4)
    step, checkpoint = kill_after_checkpoint(proc, out)

    restored = {}
    if recipe == "tiny-ppo":
        from trl_plus.trainers.ppo import PPOTrainer

        load = PPOTrainer._load_from_checkpoint

        def spy(self, path, model=None):
            load(self, path, model)
            restored.update(path=path, kl_coef=self.kl_coef, schedule=dict(vars(self.kl_schedule.fn)),
                            critic={k: v.clone() for k, v in self.critic.state_dict().items()})

        monkeypatch.setattr(PPOTrainer, "_load_from_checkpoint", spy)

    section = SECTION[recipe]
    args = ["train", recipe, "--output-dir", str(out), "--resume"]
    for setting in (f"max_steps={step + 3}", "logging_steps=1", "save_steps=4", "disable_tqdm=true"):
        args += ["--set", f"{section}.{setting}"]
    assert main(args) == 0, capsys.readouterr().err

    info = json.loads((out / "run_info.json").read_text())
    assert info["resumed_from"] == {"checkpoint": str(checkpoint), "global_step": step}  # not 0
    state = json.loads((out / "trainer_state.json").read_text())
    before = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    assert state["global_step"] == step + 3
    assert state["log_history"][: len(before)] == before  # the killed run's history, continued
    assert [r["step"] for r in state["log_history"][len(before):] if "loss" in r] == [step + 1, step + 2, step + 3]
    AutoModelForCausalLM.from_pretrained(out)

    if recipe == "tiny-ppo":
        ppo_state = json.loads((checkpoint / "ppo_state.json").read_text())
        assert restored["path"] == str(checkpoint)
        assert restored["kl_coef"] == ppo_state["kl_coef"] and restored["schedule"] == ppo_state["schedule"]
        # the critic: its backbone's weights and its value head, as the checkpoint saved them
        critic = {f"backbone.{k}": v for k, v in load_file(checkpoint / "critic" / "model.safetensors").items()}
        critic.update({f"head.{k}": v for k, v in load_file(checkpoint / "critic" / "value_head.safetensors").items()})
        assert critic.keys() == restored["critic"].keys()
        assert all(torch.equal(restored["critic"][k], v) for k, v in critic.items())
