"""The comparison pipeline: sft -> pairs -> reward -> ppo / dpo / any trainer kind (the arms)
-> eval -> report.

``run_pipeline(recipe, out)`` runs a recipe's ``stages:`` into a run folder, each stage
skipped when its ``done.json`` marker is there (an interrupted run resumes);
``render_report(run_dir)`` re-renders the report from finished runs.

Importing this package registers nothing and imports no stage: the pipeline's recipe
sections (``stages:``, ``gold:``, ``report:``, ``launcher:``) are a built-in plugin,
:mod:`trl_plus.pipeline.section`, which the plugin manager loads like every other.
"""

__all__ = ["run_pipeline", "render_report", "check_recipe"]


def run_pipeline(recipe, out, **kwargs):
    from .runner import run_pipeline as _run

    return _run(recipe, out, **kwargs)


def check_recipe(recipe, hooks=None):
    """Validate a pipeline recipe's own sections (stages, gold, report, launcher, eval as
    the eval stage runs it) without running it; raises ``RecipeError`` naming the key."""
    from ..manager import Hooks
    from ..recipe import Problems
    from .section import check_stages

    problems = Problems()
    parsed = check_stages(recipe, Hooks.of(hooks), problems)
    problems.raise_if_any()
    return parsed


def render_report(run_dir, **kwargs):
    from .report import render_report as _render

    return _render(run_dir, **kwargs)
