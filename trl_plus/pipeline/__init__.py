"""The PPO-vs-DPO comparison pipeline: sft -> pairs -> reward -> ppo / dpo -> eval -> report.

``run_pipeline(recipe, out)`` runs a recipe's ``stages:`` into a run folder, each stage
skipped when its ``done.json`` marker is there (an interrupted run resumes);
``render_report(run_dir)`` re-renders the report from finished runs.
"""

from .runner import run_pipeline

__all__ = ["run_pipeline", "render_report", "check_recipe"]


def check_recipe(recipe, hooks=None):
    """Validate a pipeline recipe completely (stages, report, eval) without running it.

    Called by recipe validation, so ``trl-plus validate`` and ``compare`` fail at start-up.
    """
    from ..manager import Hooks
    from . import config, evaluate

    parsed = config.parse(recipe)
    evaluate.validate(recipe, parsed, Hooks.of(hooks))
    return parsed


def render_report(run_dir, **kwargs):
    from .report import render_report as _render

    return _render(run_dir, **kwargs)
