"""Running a pipeline recipe: its stages in order, each skipped when already done.

``run_pipeline(recipe, out)`` is what ``trl-plus compare`` and ``trl-plus quickstart``
call. The pipeline is a list of :class:`Stage` objects (:func:`pipeline_stages`): the
stages before the policies that the recipe names, one stage per policy run of its sweep,
the evaluation and the report. The runner loops over them; what they share is the
:class:`~trl_plus.pipeline.context.Context`, and no stage imports another.

Console output is one progress bar per stage (or per training run) and one line per
finished step; everything else (transformers' warnings, trainer log dicts) is silenced.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .context import Context
from .layout import SUMMARY, Plan, fingerprint, left_out, write_json
from .progress import muted_foreign_bars, quiet_libraries
from .rundir import run_folder_error


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: its name (what the log shows and ``stop_after`` names),
    the folder of its marker (None for the report, which is rendered every time), and
    the function that runs it on the context."""

    name: str
    step: Callable[[Context], object]
    rel: str | None = None

    def run(self, ctx: Context):
        return self.step(ctx)


def pipeline_stages(ctx: Context) -> list[Stage]:
    """The recipe's stages in the order they run: corpus (when the recipe generates one),
    sft, pairs, reward (when it trains a reward model), each policy run of the sweep, eval,
    report."""
    from . import evaluate, policy, report, stages

    cfg = ctx.config.stages
    before = [Stage("corpus", stages.run_corpus, "corpus") if cfg.corpus is not None else None,
              Stage("sft", stages.run_sft, "sft"),
              Stage("pairs", stages.run_pairs, "pairs"),
              Stage("reward", stages.run_reward, "reward") if cfg.reward is not None else None]
    runs = [Stage(run.method, partial(policy.run_policy, run=run), run.rel) for run in ctx.runs]
    after = [Stage("eval", evaluate.run_eval, "eval"), Stage("report", report.run_report)]
    return [s for s in before if s is not None] + runs + after


def run_pipeline(recipe, out: str | Path, hooks=None, progress: bool = True, log=print, stop_after: str | None = None) -> Path:
    """Run every stage of a pipeline recipe into ``out``; returns the report folder.

    :param stop_after: a stage name; stop once it is done (the others stay to run).
    """
    from . import preflight

    quiet_libraries()
    ctx = Context(recipe, out, hooks, progress, log)
    started = time.time()
    claimed = False
    try:
        ctx.run.check_ours(recipe.source)  # a folder of the user's own files is not a run folder
        ctx.run.claim()  # one pipeline per folder at a time
        claimed = True
        if ctx.run.took_over:
            log(f"  taking over {ctx.run.root}: the run that held it (pid {ctx.run.took_over.get('pid')}) is no "
                "longer running (it crashed or was killed)")
        preflight.check_pipeline(ctx)  # what later stages need, checked before the first one runs
        with muted_foreign_bars():
            _save_recipe(ctx)
            steps = pipeline_stages(ctx)
            runs = [run.rel for run in ctx.runs]
            names = [s.name for s in steps if s.rel is not None and s.rel not in runs]
            ctx.plan = Plan.start(ctx.run.root, recipe.hash, names, runs)
            extra = left_out(ctx.run.root, ctx.plan.runs, ctx.plan.data["stages"])
            if extra:
                log(f"  left out of the report, kept on disk (the recipe does not name them): {', '.join(extra)}")
            for i, stage in enumerate(steps):
                _run_stage(ctx, stage, progress, log)
                if stop_after is not None and stage.name == stop_after and (i + 1 == len(steps)
                                                                           or steps[i + 1].name != stage.name):
                    break
            write_json(ctx.run.path(SUMMARY), {"wall_time_s": round(time.time() - started, 2),
                                               "skipped": ctx.skipped, "recipe_hash": recipe.hash})
            if stop_after is None:
                ctx.plan.finish()
    except OSError as exc:  # writing under the run folder failed (a read-only or full disk)
        error = run_folder_error(exc, ctx.run.root)
        if error is None:
            raise
        raise error from exc
    finally:
        ctx.close()
        if claimed:
            ctx.run.release()
        if ctx.run.created and ctx.plan is None:  # refused before it began: leave no empty folder behind
            with contextlib.suppress(OSError):
                ctx.run.root.rmdir()
    return ctx.run.path("report")


def _run_stage(ctx: Context, stage: Stage, progress: bool, log) -> None:
    skipped = len(ctx.skipped)
    t0 = time.time()
    stage.run(ctx)
    if stage.rel is not None and stage.rel in ctx.fingerprints:
        # Downstream fingerprints see when this step last ran: a step redone with
        # the same configuration (its marker deleted) makes its consumers redo too.
        stamp = (ctx.run.marker(stage.rel) or {}).get("finished_at")
        ctx.fingerprints[stage.rel] = fingerprint(ctx.fingerprints[stage.rel], stamp)
    if len(ctx.skipped) == skipped and not progress:
        log(f"  {stage.name:<28} {time.time() - t0:.1f}s")


def _save_recipe(ctx) -> None:
    """The recipe being run, saved as the run folder's ``recipe.yaml``, except when that
    file is the recipe being run (a run re-run from its own copy, perhaps edited by hand):
    it is never overwritten; what ``--set`` changed goes to ``recipe.resolved.yaml``
    (``run_folder.recipe_copy_name`` decides, as it does for ``train``)."""
    from ..run_folder import RESOLVED_RECIPE, recipe_copy_name

    name = recipe_copy_name(ctx.recipe, ctx.run.root)
    if name is not None:
        ctx.run.path(name).write_text(ctx.recipe.to_yaml())
    if name != RESOLVED_RECIPE:
        ctx.run.path(RESOLVED_RECIPE).unlink(missing_ok=True)
    else:
        ctx.log(f"  recipe.yaml is the recipe being run: left as it is; with the --set overrides it is saved as "
                f"{RESOLVED_RECIPE}")
