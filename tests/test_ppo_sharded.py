"""PPO under FSDP2 on two CPU ranks (gloo), launched as a user launches it: ``accelerate
launch`` with the shipped ``fsdp`` config, changed only where a CPU needs it (``use_cpu``,
no bf16, two processes).

accelerate enables FSDP on accelerator devices only; ``tests/fsdp_cpu/fsdp_on_cpu.py``
lifts that one gate, so accelerate's own FSDP2 plugin, wrapping, optimizer swap and
checkpoint code run here (``fully_shard`` works on CPU with gloo). What is checked: the
critic is sharded and trained by the same engine as the policy, both ranks end with the
same gathered policy and critic, which moved; the first steps' losses match a one-process
run on the same data; a run killed after a checkpoint continues with ``--resume``, its
critic restored from the engine's checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_distributed import PROBE, probe  # noqa: F401 (the fixture)

HERE = Path(__file__).parent
RUNNER = HERE / "fsdp_cpu" / "fsdp_on_cpu.py"
SHIPPED_FSDP = HERE.parent / "recipes" / "accelerate" / "fsdp.yaml"
# The first steps' losses under FSDP2 against one process: the same data and greedy rollouts;
# what differs is the order of floating-point reductions (sharded all-gather, reduce-scatter
# over two ranks), which moves the logged losses by far less than this.
LOSS_RTOL, LOSS_ATOL = 2e-3, 2e-5


@pytest.fixture
def fsdp_config(tmp_path) -> Path:
    config = yaml.safe_load(SHIPPED_FSDP.read_text())
    assert config["fsdp_config"]["fsdp_version"] == 2
    config.update(use_cpu=True, mixed_precision="no", num_processes=2)
    path = tmp_path / "fsdp_cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(config: Path, *args: str, background: bool = False):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), str(RUNNER), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "trl-plus: error" in line]
    assert done.returncode == 0, "\n".join(errors) + done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _sets(*overrides: str) -> list[str]:
    return [a for s in overrides for a in ("--set", s)]


def _equal_length_prompts(path: Path) -> Path:
    """The tiny data's prompts of the most common token length: left padding then adds nothing,
    so a row's positions (and log-probs) do not depend on which rank's batch it is in."""
    from collections import Counter

    from transformers import AutoTokenizer

    from trl_plus.tiny import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("tiny:causal-lm"))
    rows = [json.loads(line) for line in (HERE.parent / "recipes" / "data" / "tiny_prefs.jsonl").read_text().splitlines()]
    length = {r["prompt"]: len(tokenizer(r["prompt"])["input_ids"]) for r in rows}
    common = Counter(length.values()).most_common(1)[0][0]
    kept = [r for r in rows if length[r["prompt"]] == common]
    assert len(kept) >= 32
    path.write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in kept))
    return path


def _saved_critic_digest(folder: Path) -> str:
    """The probe's hash of a critic (its ``_digest``: names and weights in order), of a saved ``critic/``."""
    import hashlib

    from trl_plus.trainers.ppo_critic import load_critic

    h = hashlib.sha256()
    for name, p in sorted(load_critic(str(folder)).state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().numpy().tobytes())
    return h.hexdigest()


def _train_logs(out: Path) -> list[dict]:
    return [r for r in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss/value" in r]


@pytest.mark.slow
def test_fsdp2_ranks_agree_the_critic_is_sharded_and_saved(probe, fsdp_config):  # noqa: F811
    out, ranks = probe
    _launch(fsdp_config, "train", "tiny-ppo", "--output-dir", str(out),
            *_sets("ppo.max_steps=4", "ppo.save_steps=2", "ppo.per_device_train_batch_size=4"))
    r0, r1 = ranks("FSDP")
    assert r0["sharded"] == {"policy": True, "critic": True}  # both are DTensor shards: one engine
    for model in ("policy", "critic"):  # gathered, the same on both ranks, and trained
        assert r0["weights"]["after"][model] == r1["weights"]["after"][model], model
        assert r0["weights"]["before"][model] != r0["weights"]["after"][model], model
    rows0, rows1 = ({h for step in r["steps"] for h in step} for r in (r0, r1))
    assert rows0 and rows1 and not rows0 & rows1  # each rank trained on its own rows
    # the checkpoint holds the critic and its optimizer in the engine's format, beside critic/
    engine = out / "checkpoint-2" / "critic_engine"
    assert {"pytorch_model_fsdp.bin", "optimizer.bin", "scheduler.pt"} <= {p.name for p in engine.iterdir()}
    assert {"pytorch_model_fsdp.bin", "optimizer.bin"} <= {p.name for p in (out / "checkpoint-2").iterdir()}
    # critic/ holds the gathered weights: critic_init loads it, and it is what both ranks trained
    assert _saved_critic_digest(out / "critic") == r0["weights"]["after"]["critic"]


@pytest.mark.slow
def test_fsdp2_first_steps_match_one_process(tmp_path, fsdp_config):
    from trl_plus.cli import main

    data = _equal_length_prompts(tmp_path / "prompts.jsonl")
    common = _sets(f"data.train.path={data}", "ppo.max_steps=4", "ppo.logging_steps=1", "ppo.save_strategy='no'",
                   "ppo.num_mini_batches=1", "ppo.num_ppo_epochs=1", "ppo.generation_kwargs.do_sample=false")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "tiny-ppo", "--output-dir", str(one), *common,
                 *_sets("ppo.per_device_train_batch_size=16")]) == 0
    _launch(fsdp_config, "train", "tiny-ppo", "--output-dir", str(two), *common,
            *_sets("ppo.per_device_train_batch_size=8"))
    single, sharded = _train_logs(one), _train_logs(two)
    assert [r["step"] for r in single] == [r["step"] for r in sharded] == [1, 2, 3, 4]
    for a, b in zip(single, sharded):
        for key in ("loss/value", "loss/policy", "reward/letter_e", "kl"):
            assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL, abs=LOSS_ATOL), (a["step"], key)
    assert single[-1]["loss/value"] != single[0]["loss/value"]  # the steps differ: the comparison has teeth


def _kill_all(marker: str) -> None:
    """SIGKILL every process whose command line names ``marker`` (the run's output folder)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _complete(checkpoint: Path) -> bool:
    return (checkpoint / "trainer_state.json").exists() and (checkpoint / "critic_engine" / "scheduler.pt").exists()


@pytest.mark.slow
def test_fsdp2_sigkill_then_resume_continues(probe, fsdp_config):  # noqa: F811
    out, ranks = probe
    proc = _launch(fsdp_config, "train", "tiny-ppo", "--output-dir", str(out),
                   *_sets("ppo.max_steps=400", "ppo.save_steps=2", "ppo.logging_steps=1",
                          "ppo.per_device_train_batch_size=4"), background=True)
    deadline = time.monotonic() + 300
    try:
        while not _complete(out / "checkpoint-2"):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.5)
        time.sleep(1.0)  # past the checkpoint, mid-training
    finally:
        _kill_all(str(out))  # the launcher and every rank, at once (the ranks run in sessions of their own)
        proc.wait(timeout=60)
    saved = sorted(int(c.name.split("-")[1]) for c in out.glob("checkpoint-*") if _complete(c))
    step = saved[-1]
    assert not (out / "model.safetensors").exists()  # killed: the run never finished
    for rank in (0, 1):  # a killed rank writes no record; none may be left to mistake for the resumed run's
        (Path(os.environ["RANK_PROBE_DIR"]) / f"rank{rank}.json").unlink(missing_ok=True)

    _launch(fsdp_config, "train", "tiny-ppo", "--output-dir", str(out), "--resume",
            *_sets(f"ppo.max_steps={step + 2}", "ppo.save_steps=2", "ppo.logging_steps=1",
                   "ppo.per_device_train_batch_size=4"))
    state = json.loads((out / "trainer_state.json").read_text())
    before = json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())["log_history"]
    assert state["global_step"] == step + 2
    assert state["log_history"][: len(before)] == before  # the killed run's history, continued
    assert [r["step"] for r in state["log_history"][len(before):] if "loss" in r] == [step + 1, step + 2]
    # the resumed run started from the checkpoint's critic (restored from critic_engine/ on both ranks)
    saved = _saved_critic_digest(out / f"checkpoint-{step}" / "critic")
    r0, r1 = ranks("FSDP")
    assert r0["weights"]["before"]["critic"] == r1["weights"]["before"]["critic"] == saved
    assert r0["weights"]["after"]["critic"] == r1["weights"]["after"]["critic"] != saved


@pytest.mark.slow
def test_fsdp2_lora_value_head_on_the_shared_base(probe, fsdp_config):  # noqa: F811
    """LoRA on the attention projections: the policy's adapters and the critic (a value head on the
    adapter-disabled base the policy shares) are sharded, trained and agree across ranks."""
    out, ranks = probe
    _launch(fsdp_config, "train", "tiny-ppo", "--output-dir", str(out),
            *_sets("ppo.max_steps=2", "ppo.save_steps=2", "ppo.per_device_train_batch_size=4", "peft.r=8",
                   "peft.target_modules=[q_proj,k_proj,v_proj,o_proj]", "ppo.critic_adapter_r=0"))
    r0, r1 = ranks("FSDP")
    assert r0["sharded"] == {"policy": True, "critic": True}
    for model in ("policy", "critic"):
        assert r0["weights"]["after"][model] == r1["weights"]["after"][model], model
        assert r0["weights"]["before"][model] != r0["weights"]["after"][model], model
    assert (out / "adapter_model.safetensors").exists() and (out / "critic" / "value_head.safetensors").exists()
    assert (out / "checkpoint-2" / "critic_engine" / "optimizer.bin").exists()


def test_lora_critic_adapter_is_refused_under_sharded_engines(tmp_path, monkeypatch, capsys):
    """The critic's own adapter hooks into the policy's modules: refused under FSDP, naming the key."""
    from trl_plus.cli import main

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    args = ["train", "tiny-ppo", "--output-dir", str(tmp_path / "out"), "--set", "peft.r=8",
            "--set", "peft.target_modules=[q_proj,v_proj]", "--set", "ppo.max_steps=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "ppo.critic_adapter_r" in err and "FSDP or DeepSpeed" in err and "Traceback" not in err
