"""The PPO-vs-DPO comparison pipeline: sft -> pairs -> reward -> ppo / dpo -> eval -> report.

``run_pipeline(recipe, out)`` runs a recipe's ``stages:`` into a run folder, each stage
skipped when its ``done.json`` marker is there (an interrupted run resumes);
``render_report(run_dir)`` re-renders the report from finished runs.

Importing this package registers the pipeline's recipe kind (a recipe with ``stages:``)
with :func:`trl_plus.recipe.register_recipe_kind`, so that loading such a recipe checks
its stages too; ``trl_plus.recipe`` itself never imports the pipeline.
"""

from ..recipe import register_recipe_kind
from .runner import run_pipeline

__all__ = ["run_pipeline", "render_report", "check_recipe"]


def check_recipe(recipe, hooks=None):
    """Validate a pipeline recipe's own sections (stages, report, eval as the eval stage
    runs it) without running it; raises ``RecipeError`` naming the key."""
    from ..manager import Hooks
    from . import config, evaluate

    parsed = config.parse(recipe)
    evaluate.validate(recipe, parsed, Hooks.of(hooks))
    return parsed


def _check_kind(recipe, hooks, problems, deep: bool) -> None:
    """The pipeline's recipe kind: its sections, and with ``deep`` what they point to."""
    from .preflight import check_pipeline

    check_recipe(recipe, hooks)
    if deep:
        check_pipeline(recipe, hooks, problems)
        recipe.checked_deep = True


register_recipe_kind("stages", _check_kind, "trl-plus compare")


def render_report(run_dir, **kwargs):
    from .report import render_report as _render

    return _render(run_dir, **kwargs)
