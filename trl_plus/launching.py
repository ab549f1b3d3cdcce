"""Training on several processes: the shipped accelerate configs, and the command line that
runs ``trl-plus train`` under ``accelerate launch`` (or ``torchrun``).

``trl-plus launch`` prints or runs that command; a pipeline recipe's ``launcher:`` section
makes ``trl-plus compare`` run each of its training runs that way. Only the command is
built here: the training itself is ``trl_plus.commands.train`` on every rank.
"""

from __future__ import annotations

import difflib
import sys
from importlib import resources
from pathlib import Path

from .errors import RecipeError

LAUNCHERS = ("accelerate", "torchrun")


def shipped_accelerate_configs() -> dict[str, Path]:
    """The accelerate configs shipped in ``recipes/accelerate/``, by file stem."""
    root = resources.files("trl_plus.recipes").joinpath("accelerate")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith((".yaml", ".yml"))}


def find_accelerate_config(name_or_path: str | Path, where: str = "--accelerate-config", base_dir: Path | None = None) -> Path:
    """A shipped config by name (``multi_gpu``), or a config file (relative to ``base_dir``,
    the working directory by default); raises :class:`RecipeError` naming ``where``."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or Path.cwd()) / path
    if path.is_file():
        return path.resolve()
    shipped = shipped_accelerate_configs()
    stem = text[: -len(Path(text).suffix)] if Path(text).suffix in (".yaml", ".yml") else text
    if stem in shipped and "/" not in text:
        return shipped[stem]
    hint = difflib.get_close_matches(stem, list(shipped), n=1)
    raise RecipeError(
        f"no accelerate config file {text!r} and no shipped config of that name."
        + (f" Did you mean: {hint[0]}?" if hint else "")
        + f" Shipped: {', '.join(sorted(shipped))}",
        where,
    )


def check_accelerate_config(path: Path, where: str) -> None:
    """Parse the config as ``accelerate launch`` will, so a broken file fails here, once,
    rather than in every process."""
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        load_config_from_file(str(path))
    except Exception as exc:  # accelerate raises TypeError/ValueError/yaml errors for bad files
        raise RecipeError(f"accelerate cannot read {str(path)!r}: {type(exc).__name__}: {exc}", where) from None


def engine_environment(path: Path) -> dict[str, str]:
    """The variables ``accelerate launch`` exports from this config that say which engine the
    run gets (FSDP and its version, DeepSpeed and its ZeRO stage): what a trainer's start-up
    checks read, so ``launch`` and ``validate --accelerate-config`` run them before any process starts."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    kind = str(getattr(config, "distributed_type", "")).rsplit(".", 1)[-1]
    if kind == "FSDP":
        fsdp = getattr(config, "fsdp_config", None) or {}
        return {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": str(fsdp.get("fsdp_version", 1))}
    if kind == "DEEPSPEED":
        deepspeed = getattr(config, "deepspeed_config", None) or {}
        env = {"ACCELERATE_USE_DEEPSPEED": "true"}
        if deepspeed.get("zero_stage") is not None:
            env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] = str(deepspeed["zero_stage"])
        return env
    return {}


def check_under_engine(recipe, path: Path, hooks, where: str = "--accelerate-config") -> None:
    """Run the recipe's trainer-kind start-up check (``TrainerKind.check``) as it will run under
    the engine this accelerate config selects; a refusal names the config."""
    import os

    kind = hooks.trainer_kinds.get(recipe.trainer) if recipe.trainer else None
    if kind is None or kind.check is None:
        return
    saved = dict(os.environ)
    os.environ.update(engine_environment(path))
    try:
        kind.check(recipe)
    except RecipeError as exc:
        message = str(exc).removeprefix(f"{exc.key}: ") if exc.key else str(exc)
        raise RecipeError(f"{message} ({path.name})", where) from None
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update(saved)


def _accelerate_executable() -> list[str]:
    # The one installed beside this interpreter, so a virtual environment's accelerate (and
    # its python) runs the processes, whatever PATH says.
    script = Path(sys.executable).with_name("accelerate")
    if script.exists():
        return [str(script), "launch"]
    return [sys.executable, "-m", "accelerate.commands.launch"]


def launch_command(
    train_args: list[str],
    launcher: str = "accelerate",
    accelerate_config: Path | None = None,
    num_processes: int | None = None,
) -> list[str]:
    """The argv that runs ``trl-plus train TRAIN_ARGS`` on several processes.

    :param train_args: what follows ``trl-plus train`` (the recipe, ``--output-dir``, ...).
    :param launcher: ``accelerate`` (``accelerate launch --config_file``) or ``torchrun``
        (several CPU processes with the gloo backend, where ``accelerate launch`` runs one).
    """
    if launcher == "accelerate":
        if accelerate_config is None:
            raise RecipeError("accelerate launch needs a config (a shipped name or a file)", "accelerate_config")
        cmd = _accelerate_executable() + ["--config_file", str(accelerate_config)]
        if num_processes is not None:
            cmd += ["--num_processes", str(num_processes)]
    elif launcher == "torchrun":
        # --standalone: a free local rendezvous port, so concurrent runs do not collide.
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(num_processes or 1)]
    else:
        raise RecipeError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}", "launcher")
    return cmd + ["-m", "trl_plus", "train", *train_args]

