"""The GPU check: on one NVIDIA GPU, without network, in under 8 minutes.

1. Installs what this Python lacks of the project's dependencies (the pins of
   pyproject.toml) from a folder of wheels beside it (``--wheels``, default
   ``benchmarks/gpu_wheels``): ``pip install --no-index --find-links``, with the installed
   torch pinned so it is never replaced; then the project itself, editable, from this
   repository (or, without setuptools >= 77 here or in the folder, on PYTHONPATH).
   ``--fetch-wheels`` fills that folder where a package index can be reached.
2. Measures, side by side in one run, on a randomly initialised Llama of about 0.47B
   parameters in bf16 (``gpu_measure.py``): DPO tokens/s of ``trl_plus.DPOTrainer`` over
   ``trl.DPOTrainer`` (goal >= 0.98); PPO step time and peak GPU memory of
   ``trl_plus.PPOTrainer`` over ``trl.RLOOTrainer`` on the same prompts and generation
   settings (goals <= 1.3 and <= 1.5); then ``trl-plus quickstart`` end to end on the GPU.
   ``--parts engines`` (not in the default run, about 2.5 minutes): ``trl-plus launch
   tiny-ppo`` on one GPU under FSDP, DeepSpeed ZeRO-2 and ZeRO-3, then ``--resume``.
3. Prints a table and writes the figures to ``--out`` (JSON), naming the device.

    bash benchmarks/gpu_check.sh --dry-run                 # what it would install and measure
    bash benchmarks/gpu_check.sh --out gpu_check.json      # the check (about 7.5 minutes)
    bash benchmarks/gpu_check.sh --quick                   # fewer steps and repeats (about 4)
    bash benchmarks/gpu_check.sh --fetch-wheels --have target-freeze.txt --python-version 3.10
    bash benchmarks/gpu_check.sh --parts engines           # PPO under FSDP and DeepSpeed (a second call)

Budget on one H100 (estimated, not yet measured): install <= 60 s, DPO ~80 s, PPO ~110 s,
quickstart ~200 s. ``--budget`` (default 470 s) bounds the whole: a part that would start
with too little time left is skipped and marked so in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gpu_env  # noqa: E402
from _children import RESULT  # noqa: E402
from gpu_sizes import GOALS, estimate_s, parameter_count, sizes_for  # noqa: E402

PARTS = ("dpo", "ppo", "quickstart", "engines")
OPTIONAL = {"engines": ("deepspeed",)}  # installed when the folder has them; the part runs without
INSTALL_ESTIMATE_S = 60
MIN_PART_S = 20  # a part is not started with less time than this left


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="print what would be installed and measured; needs no GPU")
    p.add_argument("--wheels", default=str(HERE / "gpu_wheels"), help="the folder of wheels (default: %(default)s)")
    p.add_argument("--out", default="gpu_check.json", help="JSON of the figures (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats, a two-seed quickstart")
    p.add_argument("--steps", type=int, help="optimizer steps per run, DPO and PPO alike (default 12 and 5)")
    p.add_argument("--repeats", type=int, help="runs per trainer, alternating (default 4)")
    p.add_argument("--parts", default="dpo,ppo,quickstart",
                   help="which measurements, of dpo, ppo, quickstart, engines (default: %(default)s)")
    p.add_argument("--budget", type=float, default=470, help="seconds for the whole check (default: %(default)s)")
    p.add_argument("--no-install", action="store_true", help="install nothing; report what is missing and stop")
    p.add_argument("--keep", help="keep the model, run folders and logs in this folder (default: a temporary one)")
    g = p.add_argument_group("--fetch-wheels: fill the wheels folder where a package index can be reached")
    g.add_argument("--fetch-wheels", action="store_true")
    g.add_argument("--python-version", default="%d.%d" % sys.version_info[:2], help="of the GPU machine (default: this one)")
    g.add_argument("--glibc", default="2.28", help="newest manylinux glibc the GPU machine runs (default: %(default)s)")
    g.add_argument("--have", help="`pip freeze` of the GPU machine: what it has is pinned, not fetched")
    g.add_argument("--torch-version", help="torch of the GPU machine (default: from --have, else this one's)")
    g.add_argument("--with-deepspeed", action="store_true", help="fetch deepspeed too (for --parts engines)")
    # for the tests: a CPU run of tiny sizes, and a stand-in for what this Python has installed
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--installed", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    opts.parts = [x for x in opts.parts.split(",") if x]
    unknown = set(opts.parts) - set(PARTS)
    if unknown:
        p.error(f"--parts: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    if opts.installed is not None and not opts.dry_run:
        p.error("--installed stands in for the environment in --dry-run only")
    return opts


# -- the plan ----------------------------------------------------------------------------------


def print_environment(plan: gpu_env.Plan, fake: bool) -> None:
    print(f"python {sys.version.split()[0]} ({sys.executable}){'; installed packages as given by --installed' if fake else ''}")
    count = sum(len(v) for v in plan.files.values())
    print(f"wheels folder {plan.wheels}: " + (f"{count} files" if plan.wheels.is_dir() else "absent"))
    for n in plan.needs:
        if gpu_env.TORCH_FAMILY.match(n.name):
            what = "kept as installed (never installed or replaced by this check)"
        elif n.optional and n.status != "ok" and n.name not in plan.files:
            what = "not installed, not in the wheels folder: the parts that need it are skipped"
        elif n.status == "ok":
            what = "ok"
        else:
            where = ", ".join(plan.files.get(n.name, [])) or "NOT in the wheels folder"
            what = f"{n.status.upper()}: install from the wheels folder ({where})"
        print(f"  {n.name:<14}{n.have or '-':<14}{n.spec:<12} {what}")
    command = plan.project_command(sys.executable)
    if plan.project == "ok":
        project = "ok (imported from this repository)"
    elif command:
        project = f"{plan.project.upper()}: {' '.join(command[3:])}"
    else:
        project = f"{plan.project.upper()}: no setuptools >= 77 here nor in the wheels folder: used from PYTHONPATH"
    print(f"  {gpu_env.PROJECT:<14}{'(this repository)':<26} {project}")
    install = plan.install_command(sys.executable, "<torch pinned as installed>")
    print("would run: " + (" ".join(install[3:]) if install else "nothing to install"))
    for problem in plan.problems:
        print(f"PROBLEM: {problem}")


def print_measurements(opts, sizes: dict, plan: gpu_env.Plan) -> None:
    m, d, p = sizes["model"], sizes["dpo"], sizes["ppo"]
    dtype = "bf16" if opts.device == "cuda" else "float32"
    print(f"measurements on {opts.device} ({'tiny' if opts.tiny else 'quick' if opts.quick else 'full'} sizes):")
    if {"dpo", "ppo"} & set(opts.parts):
        print(f"  model: random Llama, hidden {m['hidden_size']} x {m['num_layers']} layers, {m['num_heads']} heads, "
              f"intermediate {m['intermediate_size']}, vocab {m['vocab_size']}: {parameter_count(m) / 1e6:,.1f}M parameters, "
              f"{dtype}; tokenizer: byte-level BPE trained here (no downloads)")
    total = INSTALL_ESTIMATE_S if plan.to_install or plan.project != "ok" else 0.0
    lines = {
        "dpo": (f"DPO tokens/s, trl_plus.DPOTrainer / trl.DPOTrainer: batch {d['batch_size']} pairs x max_length "
                f"{d['max_length']}, {d['steps']} steps per run ({d['untimed'] + 1} untimed), {d['repeats']} runs each, "
                f"alternating; goal {' '.join(map(str, GOALS['dpo_tokens_per_s']))}"),
        "ppo": (f"PPO step time and peak memory, trl_plus.PPOTrainer / trl.RLOOTrainer: {p['batch_size']} completions "
                f"(2 per prompt) x {p['completion_length']} new tokens, beta 0.05, {p['steps']} steps per run "
                f"({p['untimed'] + 1} untimed), {p['repeats']} runs each, alternating; goals step time "
                f"{' '.join(map(str, GOALS['ppo_step_time']))}, memory {' '.join(map(str, GOALS['ppo_peak_memory']))}"),
        "quickstart": "trl-plus quickstart end to end" + (
            f", with --set {' '.join(sizes['quickstart'])}" if sizes["quickstart"] else " (recipes/quickstart.yaml as shipped)"),
        "engines": (f"trl-plus launch tiny-ppo, one process, under {', '.join(sizes['engines'])} (DeepSpeed only where "
                    "installed): 8 steps with checkpoints, then --resume to 12"),
    }
    for part in opts.parts:
        guess = estimate_s(part, sizes)
        total += guess
        print(f"  {part}: {lines[part]}" + (f"; about {guess:.0f} s on an H100 (estimate)" if opts.device == "cuda" else ""))
    if opts.device == "cuda":
        install = f" with {INSTALL_ESTIMATE_S} s for the install" if plan.to_install or plan.project != "ok" else ""
        print(f"  total about {total:.0f} s{install} (estimate); the whole check stops at --budget {opts.budget:.0f} s")


# -- running the parts -------------------------------------------------------------------------


def run_child(parts: list[str], sizes: dict, opts, workdir: Path, env: dict, timeout: float, log_file: Path) -> tuple[dict, str]:
    """One measurement process; the merged RESULT lines it printed and how it ended."""
    cmd = [sys.executable, str(HERE / "gpu_measure.py"), *parts, "--workdir", str(workdir),
           "--sizes", json.dumps(sizes), "--device", opts.device]
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
            ended = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode}; log {log_file})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            ended = f"timed out after {timeout:.0f} s"
        log.write(out)
    merged: dict = {}
    for line in out.splitlines():
        if line.startswith(RESULT):
            merged.update(json.loads(line[len(RESULT):]))
    return merged, ended


def child_env(opts, project: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if project.startswith("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(gpu_env.REPO), env.get("PYTHONPATH"))))
    if opts.device == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def verdicts(results: dict) -> dict:
    """``{goal: {"value", "goal", "met"}}`` for every goal whose figure exists."""
    values = {"dpo_tokens_per_s": results.get("dpo", {}).get("ratio"),
              "ppo_step_time": results.get("ppo", {}).get("step_ratio"),
              "ppo_peak_memory": results.get("ppo", {}).get("memory_ratio")}
    out = {}
    for name, value in values.items():
        if value is not None:
            op, goal = GOALS[name]
            out[name] = {"value": value, "goal": f"{op} {goal}", "met": value >= goal if op == ">=" else value <= goal}
    return out


def table(results: dict) -> list[str]:
    env, rows = results.get("environment", {}), []
    model = results.get("model", {})
    head = f"{env.get('device', 'unknown device')}, torch {env.get('versions', {}).get('torch', '?')}"
    if model:
        head += f"; random Llama, {model['parameters'] / 1e6:,.1f}M parameters ({model['dtype']})"
    v = results.get("verdicts", {})

    def mark(name):
        return ("met" if v[name]["met"] else "**not met**") if name in v else ""

    d, p, q = results.get("dpo", {}), results.get("ppo", {}), results.get("quickstart", {})
    if "ratio" in d:
        rows.append(f"| DPO tokens/s, trl_plus / trl | {d['trl_tokens_per_s']['median']:,.0f} | "
                    f"{d['trl_plus_tokens_per_s']['median']:,.0f} | **{d['ratio']:.3f}** (IQR {d['ratio_iqr'][0]:.3f}-"
                    f"{d['ratio_iqr'][1]:.3f}) | >= 0.98 | {mark('dpo_tokens_per_s')} |")
    if "step_ratio" in p:
        rows.append(f"| PPO step s, PPO / RLOO | {p['rloo_step_s']['median']:.3f} | {p['ppo_step_s']['median']:.3f} | "
                    f"**{p['step_ratio']:.3f}** (IQR {p['step_ratio_iqr'][0]:.3f}-{p['step_ratio_iqr'][1]:.3f}) | <= 1.3 | "
                    f"{mark('ppo_step_time')} |")
        rows.append(f"| PPO peak memory GiB, PPO / RLOO | {p['rloo_peak_gib']['median']:.2f} | {p['ppo_peak_gib']['median']:.2f} "
                    f"| **{p['memory_ratio']:.3f}** | <= 1.5 | {mark('ppo_peak_memory')} |")
    if "wall_s" in q:
        rows.append(f"| quickstart wall s (peak {q['peak_gib']:.2f} GiB) | | {q['wall_s']:.1f} | | | "
                    f"{'finished' if q['exit_code'] == 0 else 'exit ' + str(q['exit_code'])} |")
    for config, e in results.get("engines", {}).get("configs", {}).items():
        runs = " + ".join(f"{r['wall_s']:.0f} s" for r in (e.get("train"), e.get("resume")) if r)
        rows.append(f"| PPO under {config}: 8 steps, then --resume to 12 | | {runs} | | | {e['status']} |")
    for part, status in results.get("status", {}).items():
        if status != "ok":
            rows.append(f"| {part} | | | | | {status} |")
    return [head, "", "| measurement | baseline | trl-plus | ratio | goal | |", "|---|---:|---:|---:|---|---|", *rows]


def measure(opts, sizes: dict, project: str, started: float, results: dict, write) -> None:
    folder = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    folder.mkdir(parents=True, exist_ok=True)
    logs = Path(opts.out).resolve().with_name(Path(opts.out).stem + "_logs")
    logs.mkdir(parents=True, exist_ok=True)
    env = child_env(opts, project)
    # a process per part, so that one part's failure leaves the others' figures (the model is built once, on disk)
    for parts in ([p] for p in opts.parts):
        left = opts.budget - (time.monotonic() - started)
        if left < MIN_PART_S:
            results["status"].update({p: f"skipped: {left:.0f} s of the budget left" for p in parts})
            continue
        if opts.device == "cuda" and parts != ["quickstart"]:  # a hung part leaves time to the others
            left = min(left, 3 * estimate_s(parts[0], sizes))
        print(f"measuring {' + '.join(parts)} (at most {left:.0f} s) ...", flush=True)
        got, ended = run_child(parts, sizes, opts, folder, env, left, logs / f"{'_'.join(parts)}.log")
        results.update(got)
        for p in parts:
            results["status"][p] = "ok" if p in got else ended
        failed = [c for c, e in got.get("engines", {}).get("configs", {}).items() if e["status"] == "failed"]
        if failed:
            results["status"]["engines"] = f"failed under {', '.join(failed)} (log {logs / 'engines.log'})"
        results["verdicts"] = verdicts(results)
        write()
    if not opts.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    started = time.monotonic()
    opts = parse(argv)
    if opts.fetch_wheels:
        have = Path(opts.have) if opts.have else None
        torch_version = opts.torch_version or (None if have else gpu_env.installed_lookup()("torch"))
        return gpu_env.fetch(Path(opts.wheels), opts.python_version, opts.glibc,
                             torch_version and torch_version.split("+")[0], have, print,
                             extra=("deepspeed",) if opts.with_deepspeed else ())
    mode = "tiny" if opts.tiny else "quick" if opts.quick else "full"
    sizes = sizes_for(mode, opts.steps, opts.repeats)
    optional = tuple(name for part in opts.parts for name in OPTIONAL.get(part, ()))
    plan = gpu_env.plan(Path(opts.wheels), opts.installed, optional)
    print_environment(plan, opts.installed is not None)
    print_measurements(opts, sizes, plan)
    if opts.dry_run:
        if opts.installed is None and plan.to_install and plan.wheels.is_dir():
            print(gpu_env.pip_dry_run(plan, sys.executable))
        print("dry run: nothing installed, nothing measured")
        return 0
    if plan.problems:
        print("stopped: " + "; ".join(plan.problems))
        return 2
    if opts.no_install and (plan.to_install or plan.project != "ok"):
        print("stopped (--no-install): packages are missing")
        return 2
    results: dict = {"mode": mode, "sizes": sizes, "status": {}, "goals": {k: " ".join(map(str, v)) for k, v in GOALS.items()}}
    out = Path(opts.out)

    def write():
        results["total_s"] = round(time.monotonic() - started, 1)
        out.write_text(json.dumps(results, indent=1))

    t = time.monotonic()
    results["install"] = gpu_env.install(plan, sys.executable, print)
    results["install"]["seconds"] = round(time.monotonic() - t, 1)
    write()
    measure(opts, sizes, results["install"]["project"], started, results, write)
    write()
    print("\n".join(table(results)))
    print(f"figures: {out} ({results['total_s']:.0f} s in all)")
    return 0 if all(s == "ok" for s in results["status"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
