"""The pipeline's recipe sections, a built-in plugin: ``stages:`` (which makes a recipe a
comparison, run with ``trl-plus compare``), ``gold:`` (the held-out gold reward),
``report:`` and ``launcher:``. They are registered through
``trl_plus_register_recipe_sections`` like any plugin's, so loading a recipe checks them
without any command importing the pipeline for it.

Importing this module imports nothing of the pipeline itself: each check does, when a
recipe has the section.
"""

from __future__ import annotations

import trl_plus

from ..protocols import RecipeSection


def check_stages(recipe, hooks, problems, deep: bool = False):
    """A pipeline recipe's own sections (stages, gold, report, launcher; eval as its eval
    stage runs it), its gold reward built as a dry run, and with ``deep`` what they point to
    (``trl_plus.pipeline.preflight``). Returns the parsed config (``config.parse``)."""
    from . import config, evaluate

    parsed = None
    with problems.check():
        parsed = config.parse(recipe, hooks)
    gold = recipe.raw.get("gold")
    # (under its old key, rewards:, the gold reward is built with the core's sections)
    if isinstance(gold, list) and "rewards" not in recipe.raw and not problems.under("gold"):
        hooks.components(problems=problems).reward_mix(gold, "gold")
    if parsed is None:
        return None
    with problems.check():
        evaluate.validate(recipe, parsed, hooks)
    if deep:
        from .preflight import check_pipeline

        check_pipeline(recipe, hooks, problems)
        parsed.preflighted = True
    return parsed


def _outside_a_pipeline(key: str, why: str):
    def check(recipe, hooks, problems, deep: bool = False) -> None:
        problems.add(key, why)

    return check


SECTIONS = (
    RecipeSection(
        "stages", check_stages, path_keys=("sft.base",), data_keys=("pairs.dataset", "pairs.prompts"),
        references=True, standalone=True, claims=("eval", "gold", "report", "launcher"),
        description="the comparison pipeline: sft -> pairs -> reward -> ppo / dpo -> eval -> report (trl-plus compare)",
    ),
    RecipeSection(
        "gold", _outside_a_pipeline("gold", "is the gold reward of a pipeline recipe (stages:, trl-plus compare); a "
                                            "trainer's reward sources go under rewards"),
        references=True, description="the pipeline's held-out gold reward: labels the pairs, judges every checkpoint",
    ),
    RecipeSection("report", description="the pipeline's report: title, KL budget, the smallest effect that matters"),
    RecipeSection(
        "launcher", _outside_a_pipeline("launcher", "is for pipeline recipes (trl-plus compare); train one recipe on "
                                                    "several processes with trl-plus launch RECIPE --accelerate-config "
                                                    "NAME"),
        description="how the pipeline's policy runs train: accelerate launch or torchrun",
    ),
)


@trl_plus.hookimpl(trylast=True)
def trl_plus_register_recipe_sections(register) -> None:
    for section in SECTIONS:
        register.add(section.key, section)
