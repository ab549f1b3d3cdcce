"""``trl-plus compare RECIPE``: run a pipeline recipe (sft -> pairs -> reward -> ppo / dpo
-> eval -> report) into a run folder; a re-run skips every finished stage."""

from __future__ import annotations

from pathlib import Path

from . import cli_path
from .validate import add_recipe_arguments, load_for_command


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="run PPO and DPO on the same pairs, evaluate every checkpoint, write a report")
    add_recipe_arguments(p)
    p.add_argument("--out", default=None, help="run folder (default: runs/<recipe name>); re-running resumes it")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per finished stage)")
    p.set_defaults(func=run)


def run_recipe(recipe, out: str | Path, hooks=None, progress: bool = True) -> int:
    from ..pipeline import run_pipeline

    report = run_pipeline(recipe, out, hooks=hooks, progress=progress, log=print)
    print(f"report: {report / 'report.html'}")
    print(f"        {report / 'report.md'}")
    return 0


def run(args) -> int:
    from ..manager import Hooks

    hooks = Hooks()
    recipe = load_for_command(args, hooks)
    out = cli_path(args.out or Path("runs") / Path(str(recipe.source)).stem)
    return run_recipe(recipe, out, hooks=hooks, progress=not args.no_progress)
