"""Training one policy run under the recipe's ``launcher:``: a ``trl-plus train`` subprocess
on every GPU (or several CPU processes), while everything else stays in the pipeline's
own process.
"""

from __future__ import annotations

import os
from pathlib import Path


LAUNCH_LOG = "launch.log"  # in a run's folder: the output of its launched processes
LAUNCH_RECIPE = ".launch-recipe.yaml"  # the unredacted recipe a launched run reads, for its life only


def train_launched(ctx, raw: dict, folder: Path, resume: str | None, label: str):
    """Train one run recipe as ``trl-plus train`` under the recipe's ``launcher:`` (every
    GPU, or several CPU processes); returns its trainer state, read back from the folder.

    The recipe goes to ``folder/.launch-recipe.yaml`` first (owner-only, removed when the
    launched training ends, however it ends), so the launched processes read exactly what
    the pipeline built, secrets included, while the run's ``recipe.yaml`` is the redacted
    copy the training writes (the folder is the run's own: a fresh start overwrites it,
    ``resume`` names the checkpoint to continue from). Evaluation, and everything else,
    stays in this process.
    """
    import subprocess

    import yaml
    from transformers import TrainerState

    from ..errors import ComponentError
    from ..launching import launch_command

    launcher = ctx.config.launcher
    recipe_file = folder / LAUNCH_RECIPE
    recipe_file.unlink(missing_ok=True)
    fd = os.open(recipe_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(raw, sort_keys=False))
    train_args = [str(recipe_file), "--output-dir", str(folder)] + (["--resume", str(resume)] if resume else ["--overwrite"])
    cmd = launch_command(train_args, launcher.command, launcher.accelerate_config, launcher.num_processes)
    log_path = folder / LAUNCH_LOG
    _release_gpu_memory()  # what earlier stages cached on GPU 0 is the launched rank 0's
    processes = launcher.num_processes or "the config's"
    ctx.log(f"  {label}: {launcher.command} on {processes} processes (log: {log_path})")
    try:
        with open(log_path, "a") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    finally:
        recipe_file.unlink(missing_ok=True)
    if code in (130, -2):  # interrupted (SIGINT): the run keeps its checkpoints, a re-run resumes it
        raise KeyboardInterrupt
    if code:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise ComponentError(f"{label}: the launched training exited with code {code}; its log is {log_path}:\n{tail}")
    state = folder / "trainer_state.json"
    if not state.exists():
        raise ComponentError(f"{label}: the launched training finished without writing {state}")
    return TrainerState.load_from_json(str(state))


def _release_gpu_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()

