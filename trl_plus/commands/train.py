"""``trl-plus train RECIPE``: run one trainer recipe (works under accelerate launch / torchrun)."""

from __future__ import annotations

import os
import shlex
import sys
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
    p.add_argument("--overwrite", action="store_true",
                   help="train into an output dir that holds another run (its checkpoints are deleted)")


def run(args) -> int:
    from ..checkpointing import TrainingInterrupted
    from ..errors import RecipeError
    from ..manager import Hooks
    from ..run_folder import check_output_path, claim

    hooks = Hooks()
    recipe = load_for_command(args, hooks)
    output_dir = str(cli_path(args.output_dir or Path("runs") / Path(str(recipe.source)).stem))
    if recipe.trainer is None:  # a pipeline recipe (stages:) has no single trainer
        raise RecipeError("this recipe describes a pipeline (stages:); run it with `trl-plus compare`", "trainer")
    check_output_path(output_dir)  # a file, below a file, read-only, too long: before anything else
    resume = args.resume
    if isinstance(resume, str):
        resume = str(cli_path(resume)) if Path(resume).expanduser().is_dir() else resume
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun / accelerate, say things once
    # Before any model loads, and before anything is written into the folder: what it holds is
    # checked, then it is claimed (a lock held until this run ends; train_from_recipe shares it).
    with claim(output_dir, recipe.trainer, resume, args.overwrite, recipe) as resume:
        from ..trainers.from_recipe import train_from_recipe  # torch and TRL: once the folder is claimed

        try:
            train_from_recipe(recipe, output_dir, hooks=hooks, resume_from_checkpoint=resume, overwrite=args.overwrite)
        except TrainingInterrupted as exc:
            if main_process:
                print(f"trl-plus: {interrupted_message(exc)}", file=sys.stderr)
                if exc.how != "finished" and exc.checkpoint:
                    launcher = " (under the same launcher)" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
                    print(f"trl-plus: resume with{launcher}: {resume_command(args, output_dir)}", file=sys.stderr)
            return exc.exit_code
    if main_process:
        print(f"saved to {output_dir}")
    return 0


def interrupted_message(exc) -> str:
    if exc.how == "finished":
        return (f"interrupted by {exc.signal_name} during the final save, which was finished first: "
                f"the run is complete, saved to {exc.checkpoint}")
    if exc.how == "at_once":
        saved = f"the last complete checkpoint is {exc.checkpoint}" if exc.checkpoint else "nothing to resume from"
        running = f" ({exc.running})" if getattr(exc, "running", None) else ""  # set by RewardMix: what hung
        return f"stopped at once by a second {exc.signal_name} at step {exc.step}, without saving{running}; {saved}"
    saved = f"saved checkpoint {exc.checkpoint}" if exc.checkpoint else "no checkpoint could be saved"
    return f"interrupted by {exc.signal_name} at step {exc.step}; {saved}"


def resume_command(args, output_dir: str) -> str:
    """The command line that continues this run from its last checkpoint."""
    words = ["trl-plus", "train", args.recipe]
    for override in args.overrides or []:
        words += ["--set", override]
    return shlex.join(words + ["--output-dir", output_dir, "--resume"])
