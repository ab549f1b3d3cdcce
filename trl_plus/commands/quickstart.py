"""``trl-plus quickstart``: the shipped ``quickstart`` recipe, offline, no input files.

A review corpus generated in code, a tiny Llama trained on it from scratch, pairs labelled
by the lexicon-sentiment gold reward, a reward model, PPO and DPO (three seeds each), every
checkpoint evaluated, and the report; a few minutes on a laptop CPU. ``--arms all`` runs
``quickstart-arms`` instead: the same task with PPO, DPO, online DPO, RLOO and GRPO.
"""

from __future__ import annotations

# --arms: which shipped recipe the quickstart runs
ARMS = {"ppo-dpo": "quickstart", "all": "quickstart-arms"}


def add_parser(sub) -> None:
    p = sub.add_parser("quickstart", help="PPO vs DPO end to end on a generated task, offline, in minutes")
    p.add_argument("--out", default=None,
                   help="run folder (default: runs/quickstart, with --arms all runs/quickstart-arms)")
    p.add_argument("--arms", choices=sorted(ARMS), default="ppo-dpo",
                   help="ppo-dpo (default): PPO vs DPO, about 3-5 minutes; all: PPO, DPO, online DPO, "
                        "RLOO and GRPO on the same task (recipes/quickstart-arms.yaml), about 10-12 minutes")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the recipe (recipes/quickstart.yaml), e.g. --set stages.seeds=[0,1,2]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..manager import Hooks
    from . import cli_path
    from .compare import run_recipe
    from .validate import load_for_command

    hooks = Hooks()
    args.recipe = ARMS[args.arms]
    recipe = load_for_command(args, hooks)
    out = cli_path(args.out or f"runs/{args.recipe}")
    print(f"quickstart: recipe {recipe.source}, run folder {out}")
    return run_recipe(recipe, out, hooks=hooks, progress=not args.no_progress)
