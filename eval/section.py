"""The ``eval:`` recipe section, a built-in plugin: registered through
``trl_plus_register_recipe_sections`` with its check (the section's keys, then its judges
and gold reward built as a dry run) and its path keys (prompt sets, reference models, the
generations cache). A pipeline recipe's ``stages:`` claims it: there the eval stage checks
it as it will run it.

Importing this module imports nothing heavy: the check does, when a recipe has the section.
"""

from __future__ import annotations

from typing import Any

import trl_plus
from trl_plus.protocols import RecipeSection


def check_eval_section(section: Any, hooks, problems=None):
    """An ``eval:`` section as ``trl-plus eval`` runs it: its keys
    (``trl_plus.eval.validate_eval_section``), then its judges and gold reward built as a
    dry run (no model loads). Returns the parsed section, or None when it has problems;
    raises :class:`RecipeProblems` unless ``problems`` (a ``trl_plus.recipe.Problems``) is
    given to collect them."""
    from trl_plus.components import Components
    from trl_plus.recipe import Problems

    from .config import validate_eval_section

    found = Problems() if problems is None else problems
    parsed = None
    with found.check("eval"):
        parsed = validate_eval_section(section, hooks)
    if parsed is not None:
        components = Components(hooks, found)
        for i, judge in enumerate(parsed.judges):
            check_judge(judge, f"eval.judges[{i}]", components)
        if parsed.gold is not None:
            components.reward_source(parsed.gold, "eval.gold")
    if problems is None:
        found.raise_if_any()
    return None if found.under("eval") else parsed


def check_judge(spec: Any, where: str, components) -> None:
    """Build a judge (a judge spec or a reward-source name) with dry-run ``components``;
    a reward source judging is built under ``where.source``."""
    from .judging import normalise_judge_spec

    with components.problems.check(where):
        spec = normalise_judge_spec(spec, components.hooks, where)
        if spec["name"] == "reward_source":
            source = components.reward_source(spec.get("source"), f"{where}.source")
            if source is None:
                return  # recorded under where.source
            spec = {**spec, "source": source}
        components.judge(spec, where)


def _check(recipe, hooks, problems, deep: bool = False):
    return check_eval_section(recipe.raw["eval"], hooks, problems)


SECTION = RecipeSection(
    "eval", _check, path_keys=("reference", "kl.reference"), data_keys=("prompts", "val_prompts"),
    file_keys=("cache",), references=True,
    description="checkpoints judged against a reference: win rate, KL, gold reward, lm-eval tasks (trl-plus eval)",
)


@trl_plus.hookimpl(trylast=True)
def trl_plus_register_recipe_sections(register) -> None:
    register.add(SECTION.key, SECTION)
