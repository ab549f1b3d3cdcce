"""The GPU check (benchmarks/gpu_check.sh) runs where no GPU is: its dry run plans the offline
install from what a machine has and prints what it would measure, without torch or trl; its
measurement code runs end to end on CPU at tiny sizes and writes the figures."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
# a GPU machine as the issue describes it: torch and the Hugging Face training stack, no trl
GPU_MACHINE = ("torch==2.5.1+cu124,transformers==4.57.0,accelerate==1.10.1,peft==0.17.0,pyyaml==6.0.2,"
               "requests==2.32.3,tqdm==4.67.1,psutil==7.0.0,jinja2==3.1.4,setuptools==70.0.0")


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_env
    import gpu_sizes

    return gpu_env, gpu_sizes


def _check(*args, env=None, timeout=60):
    env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(BENCH / "gpu_check.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _rows(stdout: str) -> dict[str, str]:
    """The environment table of the dry run: package name -> its line."""
    return {line.split()[0]: line for line in stdout.splitlines() if line.startswith("  ") and len(line.split()) > 1}


def test_dry_run_plans_the_install_for_a_machine_without_trl_and_needs_neither_torch_nor_trl(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("trl-1.16.0-py3-none-any.whl", "datasets-5.2.0-py3-none-any.whl", "setuptools-80.9.0-py3-none-any.whl"):
        (wheels / name).write_bytes(b"")
    # torch and trl unimportable: the dry run must not need them
    code = ("import runpy, sys; sys.modules['torch'] = sys.modules['trl'] = None; "
            f"sys.argv = ['gpu_check.py'] + sys.argv[1:]; runpy.run_path({str(BENCH / 'gpu_check.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, "--dry-run", "--wheels", str(wheels), "--installed", GPU_MACHINE],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out, rows = proc.stdout, _rows(proc.stdout)
    assert "kept as installed" in rows["torch"] and "2.5.1+cu124" in rows["torch"]
    assert "MISSING" in rows["trl"] and "trl-1.16.0-py3-none-any.whl" in rows["trl"]
    assert "MISSING" in rows["datasets"] and "datasets-5.2.0" in rows["datasets"]
    assert "MISSING" in rows["lm-eval"] and "NOT in the wheels folder" in rows["lm-eval"]
    assert "OUTDATED" in rows["transformers"] and ">=5.0" in rows["transformers"]  # 4.57 against the project's pin
    for present in ("accelerate", "peft", "pyyaml", "psutil"):
        assert rows[present].rstrip().endswith("ok"), rows[present]
    # setuptools 70 cannot build the project (it needs >= 77): pip builds it from the folder's setuptools
    assert "MISSING" in rows["trl-plus"] and f"--find-links {wheels} --no-deps -e {ROOT}" in rows["trl-plus"]
    would = next(line for line in out.splitlines() if line.startswith("would run:"))
    assert f"--no-index --find-links {wheels}" in would and "trl>=1.16,<2" in would and "lm-eval>=0.4.9" in would
    assert "transformers>=5.0" in would and "torch" not in would.replace("<torch pinned as installed>", "")
    assert "accelerate" not in would and "peft" not in would
    assert any(line.startswith("PROBLEM:") and "lm-eval" in line and "--fetch-wheels" in line for line in out.splitlines())
    # what it would measure
    assert "468.2M parameters, bf16" in out and "hidden 1024 x 24 layers" in out
    assert "trl_plus.DPOTrainer / trl.DPOTrainer" in out and "goal >= 0.98" in out
    assert "trl_plus.PPOTrainer / trl.RLOOTrainer" in out and "step time <= 1.3, memory <= 1.5" in out
    assert "quickstart: trl-plus quickstart end to end" in out
    total = int(out.split("total about ")[1].split()[0])
    assert total < 480  # the whole check is planned to fit 8 minutes on one H100
    assert out.rstrip().endswith("dry run: nothing installed, nothing measured")


def test_dry_run_here_through_the_shell_entry():
    proc = _check("--dry-run", "--quick")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert rows["trl-plus"].rstrip().endswith("ok (imported from this repository)")  # this repository, installed
    assert "would run: nothing to install" in proc.stdout and "(quick sizes)" in proc.stdout


def test_the_plan_pins_torch_and_builds_the_project_with_what_is_there(bench, tmp_path):
    gpu_env, _ = bench
    plan = gpu_env.plan(tmp_path, GPU_MACHINE.replace("setuptools==70.0.0", "setuptools==80.9.0"))
    assert plan.project_command("py") == ["py", "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation",
                                          "-e", str(gpu_env.REPO)]
    plan = gpu_env.plan(tmp_path, GPU_MACHINE)  # setuptools too old, and none in the folder: PYTHONPATH
    assert plan.project_command("py") is None
    cmd = plan.install_command("py", "c.txt")
    assert cmd[:8] == ["py", "-m", "pip", "install", "--no-index", "--find-links", str(tmp_path), "--constraint"]
    assert not any(arg.startswith("torch") for arg in cmd)
    assert gpu_env.torch_constraints(gpu_env.installed_lookup(GPU_MACHINE)) == "torch==2.5.1+cu124\n"
    old = gpu_env.plan(tmp_path, "torch==2.3.1," + GPU_MACHINE.split(",", 1)[1])
    assert any("torch 2.3.1 does not meet >=2.4,<3" in p and "never installs torch" in p for p in old.problems)
    # an optional package missing from the folder is no problem: the part that needs it is skipped
    plan = gpu_env.plan(tmp_path, GPU_MACHINE, optional=("deepspeed",))
    assert not any("deepspeed" in p for p in plan.problems) and "deepspeed" not in [n.name for n in plan.to_install]


def test_pins_are_read_the_same_without_tomllib(bench):
    gpu_env, _ = bench
    text = (ROOT / "pyproject.toml").read_text()
    deps, build = gpu_env.project_requirements()
    assert gpu_env._array(text, "project", "dependencies") == deps and "trl>=1.16,<2" in deps
    assert gpu_env._array(text, "build-system", "requires") == build == ["setuptools>=77"]


def test_sizes_fit_the_budget_and_count_parameters(bench):
    _, sizes = bench
    full, quick = sizes.sizes_for("full"), sizes.sizes_for("quick", steps=4)
    assert 0.4e9 < sizes.parameter_count(full["model"]) < 0.6e9
    assert quick["model"] == full["model"] and quick["dpo"]["steps"] == quick["ppo"]["steps"] == 4
    assert sum(sizes.estimate_s(p, full) for p in ("dpo", "ppo", "quickstart")) + 60 < 480
    assert all(s["untimed"] <= s["steps"] - 2 for s in (quick["dpo"], quick["ppo"]))  # a timed step is left


@pytest.mark.slow
def test_cpu_tiny_run_measures_both_pairs_and_writes_the_figures(tmp_path, bench):
    _, sizes = bench
    out = tmp_path / "gpu_check.json"
    proc = _check("--device", "cpu", "--tiny", "--parts", "dpo,ppo", "--steps", "2", "--repeats", "1",
                  "--out", str(out), "--keep", str(tmp_path / "work"), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["status"] == {"dpo": "ok", "ppo": "ok"} and data["environment"]["device"].startswith("CPU")
    assert data["model"]["parameters"] == sizes.parameter_count(sizes.SIZES["tiny"]["model"])
    dpo, ppo = data["dpo"], data["ppo"]
    assert dpo["ratio"] > 0 and dpo["trl_tokens_per_s"]["median"] > 0 and dpo["tokens_per_step"] > 0
    assert dpo["max_loss_difference"] == 0  # the same work on both sides: the same losses
    assert ppo["step_ratio"] > 0 and ppo["memory_ratio"] > 0 and ppo["rloo_peak_gib"]["median"] > 0
    assert all(lengths and lengths[0] > 0 for lengths in ppo["completion_length_seen"].values())
    assert set(data["verdicts"]) == {"dpo_tokens_per_s", "ppo_step_time", "ppo_peak_memory"}
    assert all(isinstance(v["met"], bool) for v in data["verdicts"].values())
    assert "| DPO tokens/s, trl_plus / trl |" in proc.stdout and "| PPO peak memory GiB, PPO / RLOO |" in proc.stdout
    assert (tmp_path / "gpu_check_logs" / "dpo.log").exists() and (tmp_path / "gpu_check_logs" / "ppo.log").exists()


def test_a_part_without_budget_left_is_skipped_and_recorded(tmp_path):
    out = tmp_path / "figures.json"
    proc = _check("--device", "cpu", "--tiny", "--parts", "quickstart", "--budget", "1", "--out", str(out))
    assert proc.returncode == 1
    assert json.loads(out.read_text())["status"]["quickstart"].startswith("skipped")


def test_quickstart_and_engine_parts_read_what_their_runs_leave(bench, tmp_path, monkeypatch):
    _, sizes = bench
    import gpu_measure

    import trl_plus.cli

    calls = []

    def fake_cli(argv):  # what `trl-plus quickstart` leaves: the report
        calls.append(argv)
        report = Path(argv[argv.index("--out") + 1]) / "report"
        report.mkdir(parents=True)
        (report / "report.json").write_text(json.dumps({"verdict": ["v"], "costs": [{"stage": "sft", "wall_time_s": 1.5}]}))
        return 0

    monkeypatch.setattr(trl_plus.cli, "main", fake_cli)
    tiny = sizes.sizes_for("tiny")
    result = gpu_measure.part_quickstart(tiny, "cpu", tmp_path)
    assert calls[0][:4] == ["quickstart", "--out", str(tmp_path / "quickstart"), "--no-progress"]
    assert calls[0].count("--set") == len(tiny["quickstart"])
    assert result["exit_code"] == 0 and result["verdict"] == ["v"] and result["stages_s"] == {"sft": 1.5}

    launched = []

    def fake_run(cmd, **kwargs):  # what `trl-plus launch` leaves: checkpoints, the critic, the trainer state
        launched.append(cmd)
        folder = Path(cmd[cmd.index("--output-dir") + 1])
        steps = int(cmd[cmd.index("--set") + 1].split("=")[1])
        (folder / "critic").mkdir(parents=True, exist_ok=True)
        (folder / f"checkpoint-{steps}").mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": steps}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    engines = gpu_measure.part_engines({**tiny, "engines": ["cpu", "deepspeed_zero3"]}, "cpu", tmp_path)["configs"]
    assert [c[c.index("--accelerate-config") + 1] for c in launched] == ["cpu", "cpu"]
    assert "--overwrite" in launched[0] and "--resume" in launched[1]
    assert engines["cpu"]["status"] == "ok" and engines["cpu"]["resume"]["checkpoints"] == ["checkpoint-12", "checkpoint-8"]
    if importlib.util.find_spec("deepspeed") is None:
        assert engines["deepspeed_zero3"]["status"].startswith("skipped")
