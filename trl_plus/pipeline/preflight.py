"""Start-up checks of a pipeline recipe: everything a later stage needs, before the first.

Recipe validation checks the shape of a recipe (keys, types, component names and
keywords; ``trl_plus.pipeline.section.check_stages`` for the stages) and builds its gold
reward as a dry run. These checks look at what the recipe points to: the eval prompt file is
there and has its prompt column; the eval stage's own gold reward and judges build (a
reward model's folder exists; it is not loaded); the lm-eval tasks exist; the models and
datasets it names are local folders that exist or hub ids that can be fetched. A problem
found here would otherwise stop the run after the training stages.

Every problem is collected, and a recipe loaded with ``deep=True`` gets them together
with its other problems, so one run of ``trl-plus validate`` (or the start of
``trl-plus compare``) lists all of them, each under its key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DataError, RecipeError, RecipeProblems
from ..eval.section import check_judge
from ..recipe import Problems

# Prompt sets the eval stage reads from the recipe's ``eval:`` (``val_prompts``, when the
# pipeline has it, is a second set beside ``prompts``).
PROMPT_KEYS = ("prompts", "val_prompts")


class PreflightError(RecipeProblems):
    """Several start-up problems of a pipeline recipe in one error; ``problems`` is [(key, message)]."""


def check_pipeline(ctx_or_recipe, hooks=None, problems: Problems | None = None) -> None:
    """Check what a pipeline recipe points to; raises one :class:`PreflightError` (a
    ``RecipeError``) listing every problem found, or adds them to ``problems``.

    :param ctx_or_recipe: the pipeline's ``Context`` (its recipe, parsed config and hooks
        are used) or a validated pipeline recipe. A recipe loaded with ``deep=True`` (as
        ``trl-plus validate`` and ``compare`` load it) was checked then: not again (its
        parsed config, kept on the recipe, says so: ``PipelineConfig.preflighted``).
    """
    from ..components import Components
    from ..manager import Hooks
    from . import config as config_mod

    if hasattr(ctx_or_recipe, "recipe") and hasattr(ctx_or_recipe, "config"):
        recipe, config, hooks = ctx_or_recipe.recipe, ctx_or_recipe.config, ctx_or_recipe.hooks
    else:
        hooks = Hooks.of(hooks)
        recipe, config = ctx_or_recipe, config_mod.parse(ctx_or_recipe, hooks)
    if problems is None and config.preflighted:
        return
    found = Problems() if problems is None else problems
    raw_eval = recipe.raw.get("eval") or {}
    base = recipe.base_dir

    for key in PROMPT_KEYS:
        if raw_eval.get(key):
            _check_prompts(raw_eval[key], f"eval.{key}", raw_eval, base, hooks, found)
    # Without eval.prompts the corpus stage writes the prompt files: nothing to look at yet.

    # The gold reward (gold:) was built when the recipe loaded; the eval stage's own
    # gold reward and judges are built here, as a dry run (no model loads).
    components = Components(hooks, found)
    if raw_eval.get("gold") is not None:
        components.reward_source(raw_eval["gold"], "eval.gold")
    # Without eval.judges the judge is the gold reward, checked above.
    for i, spec in enumerate(raw_eval.get("judges") or []):
        check_judge(spec, f"eval.judges[{i}]", components)

    _check_tasks(raw_eval.get("tasks") or [], found)

    stages = config.stages
    if stages.sft.base is not None:
        _check_ref(stages.sft.base, "stages.sft.base", base, "model", found)
    if stages.pairs.dataset is not None:
        _check_pairs_dataset(stages.pairs.dataset, base, hooks, found)
    if stages.pairs.prompts is not None:
        _check_prompts(stages.pairs.prompts, "stages.pairs.prompts", {"max_prompts": stages.pairs.max_prompts}, base,
                       hooks, found)
    if raw_eval.get("reference"):
        _check_ref(raw_eval["reference"], "eval.reference", base, "model", found)
    kl = raw_eval.get("kl")
    if isinstance(kl, Mapping) and kl.get("reference"):
        _check_ref(kl["reference"], "eval.kl.reference", base, "model", found)

    if problems is None and found:
        raise PreflightError(found.items)


def _check_ref(name: Any, where: str, base: Path, repo_type: str, problems: Problems) -> str | None:
    """A model or dataset name: a local path that exists, or a hub id (cached when offline)."""
    from ..model_refs import resolve_model_ref

    try:
        return resolve_model_ref(name, where, base, repo_type=repo_type, lookup=False)
    except RecipeError as exc:
        problems.add_error(where, exc)
        return None


def _check_prompts(source: Any, where: str, raw_eval: Mapping, base: Path, hooks, problems: Problems) -> None:
    from ..eval import load_prompts

    name = source.get("path") if isinstance(source, Mapping) else source
    if not isinstance(name, str):
        return  # the eval section's own validation reports a prompt set of the wrong type
    if not Path(name).expanduser().is_absolute():
        # Loading the recipe made every local path absolute: this is a hub dataset, and
        # loading it here would download it; that it can be fetched will do.
        _check_ref(name, where, base, "dataset", problems)
        return
    try:
        load_prompts(source, prompt_column=raw_eval.get("prompt_column") or "prompt",
                     max_prompts=raw_eval.get("max_prompts"), hooks=hooks, base_dir=base,
                     drop_empty=bool(raw_eval.get("drop_empty")))
    except DataError as exc:
        # load_prompts reports under eval.prompts, whichever set it read
        message = str(exc).removeprefix("eval.prompts: ")
        problems.add(where, message)
    except Exception as exc:  # an unreadable file: say so here rather than after training
        problems.add_error(where, exc)


def _check_tasks(tasks: list, problems: Problems) -> None:
    from ..eval.benchmarks import OFFLINE_PACK, offline_tasks
    from ..registry import did_you_mean

    shipped = offline_tasks()
    unknown = [(i, t) for i, t in enumerate(tasks) if t != OFFLINE_PACK and t not in shipped]
    # The shipped pack's namespace needs no lm-eval index to tell a typo.
    if any(not str(t).startswith("trl_plus_") for _, t in unknown):
        try:
            from ..eval.benchmarks import task_manager

            known = set(task_manager().all_tasks)
        except Exception:
            # lm-eval indexes its task files on disk, which works offline; should building
            # the index fail (a broken install, a task file it cannot parse), the eval stage
            # reports unknown tasks itself, so hub task names go unchecked here.
            known = {t for _, t in unknown if not str(t).startswith("trl_plus_")}
        unknown = [(i, t) for i, t in unknown if t not in known]
    for i, task in unknown:
        problems.add(f"eval.tasks[{i}]", f"unknown lm-eval task {task!r}.{did_you_mean(str(task), shipped)} "
                                          f"Shipped offline tasks: {', '.join(shipped)} (or {OFFLINE_PACK!r})")
    if not unknown and tasks:  # each task's data can be loaded (cached, or the hub has it), before any training
        from ..eval.benchmarks import check_tasks

        with problems.check():
            check_tasks([str(t) for t in tasks])


def _check_pairs_dataset(name: Any, base: Path, hooks, problems: Problems) -> None:
    where = "stages.pairs.dataset"
    resolved = _check_ref(name, where, base, "dataset", problems)
    if resolved is None or not Path(resolved).exists():
        return  # a hub dataset: the pairs stage loads it (downloading it here would be the same cost twice)
    from ..data.splits import require_columns

    try:
        dataset = hooks.load_dataset({"path": resolved, "split": "train"})
        require_columns(dataset, ["prompt", "chosen", "rejected"], where)
    except Exception as exc:
        problems.add_error(where, exc)
