"""``trl-plus validate RECIPE``: check a recipe before a run spends any compute."""

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


def run(args) -> int:
    from ..manager import Hooks
    from ..recipe import load_recipe

    hooks = Hooks()
    recipe = load_recipe(args.recipe, args.overrides, hooks=hooks)
    if recipe.stages:  # what `trl-plus compare` checks at start-up, so validate finds it first
        from ..pipeline.preflight import check_pipeline

        check_pipeline(recipe, hooks=hooks)
    stages = [name for name, value in recipe.stages.items() if isinstance(value, dict)]
    what = f"trainer: {recipe.trainer}" if recipe.trainer else "pipeline: " + " -> ".join(stages)
    print(f"{recipe.source}: ok ({what}, hash {recipe.hash})")
    return 0
