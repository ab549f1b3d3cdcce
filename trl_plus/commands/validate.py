"""``trl-plus validate RECIPE``: check a recipe before a run spends any compute.

Every problem of the recipe is reported at once, one line each under its key path:
sections and keys, trainer-config values, every component built as a dry run (reward
sources import, URLs are http(s), schedules and filters accept their arguments; no model
loads), and for a pipeline what its stages point to. ``train``, ``compare`` and ``eval
--recipe`` run the same checks at start-up.
"""

from __future__ import annotations


def add_recipe_arguments(p) -> None:
    p.add_argument("recipe", help="a recipe file, or the name of a shipped recipe (e.g. tiny-dpo)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set dpo.beta=0.05 or --set rewards.0.weight=2; "
             "a relative path given here resolves against the working directory",
    )


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="validate a recipe without running it")
    add_recipe_arguments(p)
    p.set_defaults(func=run)


def load_for_command(args, hooks):
    """The recipe a command was given, checked completely (see the module docstring)."""
    import trl_plus.pipeline  # noqa: F401  (registers the pipeline's recipe kind, stages:)

    from ..recipe import load_recipe

    return load_recipe(args.recipe, args.overrides, hooks=hooks, deep=True)


def run(args) -> int:
    from ..manager import Hooks

    recipe = load_for_command(args, Hooks())
    stages = [name for name, value in recipe.stages.items() if isinstance(value, dict)]
    what = f"trainer: {recipe.trainer}" if recipe.trainer else "pipeline: " + " -> ".join(stages)
    print(f"{recipe.source}: ok ({what}, hash {recipe.hash})")
    return 0
