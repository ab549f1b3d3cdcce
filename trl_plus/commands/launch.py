"""``trl-plus launch RECIPE --accelerate-config NAME|PATH``: ``trl-plus train`` on every GPU,
through ``accelerate launch`` (a shipped config by name, or your own file)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from . import cli_path
from .train import add_train_arguments


def add_parser(sub) -> None:
    p = sub.add_parser("launch", help="train a recipe on several GPUs with accelerate launch")
    add_train_arguments(p)
    p.add_argument("--accelerate-config", required=True, metavar="NAME|PATH",
                   help="a shipped accelerate config (cpu, single_gpu, multi_gpu, deepspeed_zero2, deepspeed_zero3, "
                        "fsdp, multi_node) or a config file")
    p.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="processes in all (GPUs of all machines); default: the config's num_processes")
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    p.set_defaults(func=run)


def train_arguments(args, recipe) -> list[str]:
    """What the launched ``trl-plus train`` gets: every path absolute, so it does not matter
    where the processes start."""
    name = str(cli_path(args.recipe)) if Path(args.recipe).is_file() else args.recipe
    out = cli_path(args.output_dir or Path("runs") / Path(str(recipe.source)).stem)
    argv = [name, "--output-dir", str(out)]
    for text in args.overrides:
        argv += ["--set", text]
    if getattr(args, "overwrite", False):
        argv.append("--overwrite")
    if args.resume is True:
        argv.append("--resume")
    elif args.resume is not None:
        argv += ["--resume", str(cli_path(args.resume))]
    return argv


def run(args) -> int:
    from ..errors import RecipeError
    from ..launching import check_accelerate_config, check_under_engine, find_accelerate_config, launch_command
    from ..manager import Hooks
    from ..recipe import load_recipe

    if args.num_processes is not None and args.num_processes < 1:
        raise RecipeError(f"must be at least 1, got {args.num_processes}", "--num-processes")
    config = find_accelerate_config(args.accelerate_config)
    check_accelerate_config(config, "--accelerate-config")
    # Checked once here, before N processes each find the same mistake.
    hooks = Hooks()
    recipe = load_recipe(args.recipe, args.overrides, hooks=hooks)
    if recipe.trainer is None:
        raise RecipeError("this recipe describes a pipeline (stages:); run it with `trl-plus compare` "
                          "and put the accelerate config in its launcher: section", "trainer")
    check_under_engine(recipe, config, hooks)  # what the trainer refuses under this engine, before N processes start
    cmd = launch_command(train_arguments(args, recipe), "accelerate", config, args.num_processes)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    code = subprocess.run(cmd).returncode
    if code:
        print(f"trl-plus: error: the launched training exited with code {code} (its output is above)", file=sys.stderr)
        return 130 if code in (130, -2) else 1
    return 0
