"""Two processes on CPU (torchrun, gloo): what data parallelism promises.

Both ranks end with the same policy (and critic) weights, each rank trained on different
rows, only rank 0 writes checkpoints and reports, and a two-process ``compare`` finishes.
A probe plugin (``tests/distributed_probe``), installed through an entry point, records
every rank's side of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_launch import compare_args  # the quickstart cut to one DPO run
from trl_plus.cli import main
from trl_plus.launching import launch_command

PROBE = Path(__file__).parent / "distributed_probe"
# Rank 1's only writes: the folder of each checkpoint, where it saves its own RNG state.
CHECKPOINT = "checkpoint-"


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """Processes started from here load the probe plugin; returns (watched folder, reader)."""
    records, watched = tmp_path / "ranks", tmp_path / "out"
    records.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PROBE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("RANK_PROBE_DIR", str(records))
    monkeypatch.setenv("RANK_PROBE_WATCH", str(watched))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def ranks(engine: str = "MULTI_CPU") -> list[dict]:
        found = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert all(r["world_size"] == 2 and r["distributed_type"].endswith(engine) for r in found)
        return found

    return watched, ranks


def _torchrun(recipe: str, out: Path, *overrides: str) -> None:
    args = [recipe, "--output-dir", str(out)] + [a for s in overrides for a in ("--set", s)]
    done = subprocess.run(launch_command(args, "torchrun", num_processes=2), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _check_ranks(ranks: list[dict], out: Path, models: tuple[str, ...], reports: tuple[str, ...], under: str = "") -> None:
    """:param under: the run's folder within the watched one (its writes are named from there)."""
    r0, r1 = ranks
    for r in ranks:
        r["writes"] = [w.removeprefix(under) for w in r["writes"]]
    for model in models:  # gradients were averaged: the same weights on both, and they moved
        assert r0["weights"]["after"][model] == r1["weights"]["after"][model], model
        assert r0["weights"]["before"][model] != r0["weights"]["after"][model], model
    rows0, rows1 = ({h for step in r["steps"] for h in step} for r in ranks)
    assert rows0 and rows1 and not rows0 & rows1  # the sampler split the data between the ranks
    for name in reports:
        assert name in r0["writes"] and (out / name).exists()
    assert all(w.startswith(CHECKPOINT) and "/" not in w for w in r1["writes"]), r1["writes"]
    checkpoints = sorted(out.glob(CHECKPOINT + "*"))
    assert checkpoints and all({"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in c.iterdir()} for c in checkpoints)
    assert any(w.startswith(CHECKPOINT) and w.endswith("trainer_state.json") for w in r0["writes"])


def test_python_m_trl_plus_is_the_cli():
    done = subprocess.run([sys.executable, "-m", "trl_plus", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("trl-plus ")


@pytest.mark.slow
def test_torchrun_dpo_two_ranks_agree_and_split_the_data(probe):
    out, ranks = probe
    _torchrun("tiny-dpo", out, "dpo.max_steps=4", "dpo.save_strategy=steps", "dpo.save_steps=2",
              "dpo.per_device_train_batch_size=4")
    _check_ranks(ranks(), out, ("policy",), ("recipe.yaml", "run_info.json", "filter_report.json", "trainer_state.json"))


@pytest.mark.slow
def test_torchrun_ppo_two_ranks_agree_on_policy_and_critic(probe):
    out, ranks = probe
    _torchrun("tiny-ppo", out, "ppo.max_steps=4", "ppo.save_strategy=steps", "ppo.save_steps=2",
              "ppo.per_device_train_batch_size=4")
    _check_ranks(ranks(), out, ("policy", "critic"),
                 ("recipe.yaml", "run_info.json", "filter_report.json", "trainer_state.json", "ppo_state.json"))
    assert (out / "critic" / "config.json").exists()


@pytest.mark.slow
def test_two_process_compare_finishes_and_reports(probe, capsys):
    out, ranks = probe
    assert main(compare_args(out, "launcher.command=torchrun", "launcher.num_processes=2")) == 0
    run = out / "dpo" / "beta0.1-seed0"
    _check_ranks(ranks(), run, ("policy",), ("run_info.json", "trainer_state.json"), under="dpo/beta0.1-seed0/")
    assert json.loads((run / "done.json").read_text())["global_step"] == 2
    assert len(list((out / "eval" / "dpo" / "beta0.1-seed0").glob("step-*/eval.json"))) == 2
    assert "## Verdict" in (out / "report" / "report.md").read_text()
    assert "torchrun on 2 processes" in capsys.readouterr().out


@pytest.mark.slow
def test_launch_runs_accelerate_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    assert main(["launch", "tiny-dpo", "--accelerate-config", "cpu", "--output-dir", str(out),
                 "--set", "dpo.max_steps=2"]) == 0
    assert (out / "config.json").exists() and json.loads((out / "run_info.json").read_text())["global_step"] == 2
