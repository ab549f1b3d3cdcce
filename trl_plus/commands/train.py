"""``trl-plus train RECIPE``: run one trainer recipe (works under accelerate launch / torchrun)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from . import cli_path
from .validate import add_recipe_arguments, load_for_command


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train with a recipe")
    add_train_arguments(p)
    p.set_defaults(func=run)


def add_train_arguments(p) -> None:
    """The recipe and what ``trl-plus train`` takes besides (``trl-plus launch`` passes them on)."""
    add_recipe_arguments(p)
    p.add_argument("--output-dir", default=None, help="where to save (default: runs/<recipe name>)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="resume from the last checkpoint in the output dir, or from CHECKPOINT")


def run(args) -> int:
    from ..errors import RecipeError
    from ..manager import Hooks

    hooks = Hooks()
    recipe = load_for_command(args, hooks)
    output_dir = str(cli_path(args.output_dir or Path("runs") / Path(str(recipe.source)).stem))
    if recipe.trainer is None:  # a pipeline recipe (stages:) has no single trainer
        raise RecipeError("this recipe describes a pipeline (stages:); run it with `trl-plus compare`", "trainer")
    resume = args.resume
    if isinstance(resume, str):
        path = cli_path(resume)
        if not path.is_dir():
            raise RecipeError(f"no checkpoint folder {resume!r} (looked in {Path.cwd()})", "--resume")
        resume = str(path)
    module = importlib.import_module(f"trl_plus.trainers.{recipe.trainer}")
    module.train_from_recipe(recipe, output_dir, hooks=hooks, resume_from_checkpoint=resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun / accelerate, say it once
        print(f"saved to {output_dir}")
    return 0
