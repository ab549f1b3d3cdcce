"""``trl-plus validate RECIPE``: check a recipe before a run spends any compute.

Every problem of the recipe is reported at once, one line each under its key path:
sections and keys, trainer-config values, every component built as a dry run (reward
sources import, URLs are http(s), schedules and filters accept their arguments; no model
loads), and for a pipeline what its stages point to. ``train``, ``compare`` and ``eval
--recipe`` run the same checks at start-up.

What it runs: the recipe itself is plain data (read as YAML, no tags that build Python
objects). Building the components as a dry run calls the factories of the installed
plugins (as every command does), and for a ``python`` reward source imports the module
the recipe names (``module:attr`` or ``file.py:attr``), which runs that module's
top-level code, and instantiates a class with the entry's ``kwargs``. With
``--no-import`` no such module is imported: its file is found and its source is read
(``ast``) to see that it defines the attribute.
"""

from __future__ import annotations

EXECUTES = (
    "What validate runs: the recipe is plain data, but a python reward source's module (module:attr or "
    "file.py:attr) is imported to check it, which runs that module's top-level code (and a class is "
    "instantiated with its kwargs); installed plugins are loaded as by every command. With --no-import "
    "nothing the recipe names is imported: the module's file is found and its source read (not run) for "
    "the attribute. Use --no-import on a recipe you do not trust."
)


def add_recipe_arguments(p) -> None:
    p.add_argument("recipe", help="a recipe file, or the name of a shipped recipe (e.g. tiny-dpo)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set dpo.beta=0.05 or --set rewards.0.weight=2; "
             "a relative path given here resolves against the working directory",
    )


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="validate a recipe without running it",
                       description="Check a recipe completely, without loading a model. " + EXECUTES)
    add_recipe_arguments(p)
    p.add_argument(
        "--no-import", action="store_true",
        help="import no module the recipe names (python reward sources): check statically that the module's "
             "file is found and defines the attribute, without running any of it",
    )
    p.add_argument(
        "--accelerate-config", default=None, metavar="NAME|PATH",
        help="also check the recipe as it would start under this accelerate config (a shipped name such as "
             "fsdp or deepspeed_zero3, or a file): what its trainer refuses under that engine",
    )
    p.set_defaults(func=run)


def load_for_command(args, hooks):
    """The recipe a command was given, checked completely (see the module docstring); its
    plugin sections (a pipeline's ``stages:``, ``eval:``) by the plugins that registered them."""
    from ..recipe import load_recipe

    return load_recipe(args.recipe, args.overrides, hooks=hooks, deep=True)


def run(args) -> int:
    import contextlib

    from ..errors import RecipeError
    from ..manager import Hooks
    from ..registry import no_imports

    hooks = Hooks()
    with no_imports() if getattr(args, "no_import", False) else contextlib.nullcontext():
        recipe = load_for_command(args, hooks)
    engine = ""
    if getattr(args, "accelerate_config", None):
        from ..launching import check_accelerate_config, check_under_engine, find_accelerate_config

        config = find_accelerate_config(args.accelerate_config)
        check_accelerate_config(config, "--accelerate-config")
        if recipe.trainer is None:
            raise RecipeError("--accelerate-config checks a trainer recipe as trl-plus launch starts it; a pipeline "
                              "recipe's training runs take theirs from its launcher: section", "--accelerate-config")
        check_under_engine(recipe, config, hooks)
        engine = f", under {config.name}"
    stages = [name for name, value in (recipe.raw.get("stages") or {}).items() if isinstance(value, dict)]
    what = f"trainer: {recipe.trainer}" if recipe.trainer else "pipeline: " + " -> ".join(stages)
    how = "; python references read, not imported" if getattr(args, "no_import", False) else ""
    print(f"{recipe.source}: ok ({what}, hash {recipe.hash}{how}{engine})")
    return 0
