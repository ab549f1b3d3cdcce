"""Start-up checks of a pipeline recipe: everything a later stage needs, before the first.

Recipe validation (``trl_plus.pipeline.check_recipe``) checks the shape of a recipe: keys,
types, component names and their keywords. These checks look at what the recipe points
to: the eval prompt file is there and has its prompt column; the gold reward and the
judges build; the lm-eval tasks exist; the models and datasets it names are local
folders that exist or hub ids that can be fetched. A problem found here would otherwise
stop the run after the training stages.

Every problem is collected, so one run of ``trl-plus validate`` (or the start of
``trl-plus compare``) lists all of them, each under its key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DataError, RecipeError, TrlPlusError

# Prompt sets the eval stage reads from the recipe's ``eval:`` (``val_prompts``, when the
# pipeline has it, is a second set beside ``prompts``).
PROMPT_KEYS = ("prompts", "val_prompts")


class PreflightError(RecipeError):
    """Several start-up problems in one error; ``problems`` is [(key, message)]."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            key, message = self.problems[0]
            super().__init__(message, key)
        else:
            lines = "\n".join(f"  {key}: {message}" for key, message in self.problems)
            super().__init__(f"the recipe has {len(self.problems)} problems:\n{lines}")


class _Problems:
    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, message: str) -> None:
        self.items.append((key, message))

    def add_error(self, where: str, exc: BaseException) -> None:
        """An error raised while checking ``where``: under its own key when that lies
        within ``where``, else under ``where`` with its whole text."""
        if isinstance(exc, RecipeError) and exc.key and exc.key.startswith(where):
            self.add(exc.key, str(exc).removeprefix(f"{exc.key}: "))
            return
        message = str(exc).removeprefix(f"{where}: ")  # DataError texts often start with their key
        if not isinstance(exc, TrlPlusError):
            message = f"{type(exc).__name__}: {message}"
        self.add(where, message)


def check_pipeline(ctx_or_recipe, hooks=None) -> None:
    """Check what a pipeline recipe points to; raises one :class:`PreflightError` (a
    ``RecipeError``) listing every problem found.

    :param ctx_or_recipe: the pipeline's ``Context`` (its recipe, parsed config and hooks
        are used) or a validated pipeline recipe.
    """
    from ..manager import Hooks
    from . import config as config_mod

    if hasattr(ctx_or_recipe, "recipe") and hasattr(ctx_or_recipe, "config"):
        recipe, config, hooks = ctx_or_recipe.recipe, ctx_or_recipe.config, ctx_or_recipe.hooks
    else:
        recipe, config = ctx_or_recipe, config_mod.parse(ctx_or_recipe)
        hooks = Hooks.of(hooks)
    problems = _Problems()
    raw_eval = recipe.raw.get("eval") or {}
    base = recipe.base_dir

    for key in PROMPT_KEYS:
        if raw_eval.get(key):
            _check_prompts(raw_eval[key], f"eval.{key}", raw_eval, base, hooks, problems)
    # Without eval.prompts the corpus stage writes the prompt files: nothing to look at yet.

    from ..components import Components

    components = Components(hooks)
    for i, spec in enumerate(config.gold):
        _check_reward_source(spec, f"rewards[{i}]", components, base, problems)
    if raw_eval.get("gold") is not None:
        _check_reward_source(raw_eval["gold"], "eval.gold", components, base, problems)
    # Without eval.judges the judge is the gold reward, checked above.
    for i, spec in enumerate(raw_eval.get("judges") or []):
        _check_judge(spec, f"eval.judges[{i}]", components, hooks, base, problems)

    _check_tasks(raw_eval.get("tasks") or [], problems)

    stages = config.stages
    if stages.sft.base is not None:
        _check_ref(stages.sft.base, "stages.sft.base", base, "model", problems)
    if stages.pairs.dataset is not None:
        _check_pairs_dataset(stages.pairs.dataset, base, hooks, problems)
    if stages.pairs.prompts is not None:
        _check_prompts(stages.pairs.prompts, "stages.pairs.prompts", {"max_prompts": stages.pairs.max_prompts}, base,
                       hooks, problems)
    if raw_eval.get("reference"):
        _check_ref(raw_eval["reference"], "eval.reference", base, "model", problems)
    kl = raw_eval.get("kl")
    if isinstance(kl, Mapping) and kl.get("reference"):
        _check_ref(kl["reference"], "eval.kl.reference", base, "model", problems)

    if problems.items:
        raise PreflightError(problems.items)


def _check_ref(name: Any, where: str, base: Path, repo_type: str, problems: _Problems) -> str | None:
    """A model or dataset name: a local path that exists, or a hub id (cached when offline)."""
    from ..loading import resolve_model_ref

    try:
        return resolve_model_ref(name, where, base, repo_type=repo_type, lookup=False)
    except RecipeError as exc:
        problems.add_error(where, exc)
        return None


def _check_prompts(source: Any, where: str, raw_eval: Mapping, base: Path, hooks, problems: _Problems) -> None:
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
                     max_prompts=raw_eval.get("max_prompts"), hooks=hooks, base_dir=base)
    except DataError as exc:
        # load_prompts reports under eval.prompts, whichever set it read
        message = str(exc).removeprefix("eval.prompts: ")
        problems.add(where, message)
    except Exception as exc:  # an unreadable file: say so here rather than after training
        problems.add_error(where, exc)


def _check_reward_source(spec: Any, where: str, components, base: Path, problems: _Problems) -> None:
    """Build the source, except a reward model: its folder (or hub id) is checked instead
    of loading the model twice."""
    from ..components import REWARD_CORE_KEYS, split_spec

    try:
        name, kwargs, _ = split_spec(spec, where, REWARD_CORE_KEYS)
        if name == "reward_model":
            components.hooks.reward_sources.check_kwargs(name, kwargs, where)
            _check_ref(kwargs.get("model"), f"{where}.model", base, "model", problems)
            return
        components.reward_source(spec, where)
    except Exception as exc:
        problems.add_error(where, exc)


def _check_judge(spec: Any, where: str, components, hooks, base: Path, problems: _Problems) -> None:
    from ..components import split_spec
    from ..eval import normalise_judge_spec

    try:
        spec = normalise_judge_spec(spec, hooks, where)
        name, kwargs, _ = split_spec(spec, where)
        if name == "reward_source":
            _check_reward_source(kwargs.get("source"), f"{where}.source", components, base, problems)
        elif name == "reward_model":
            _check_ref(kwargs.get("model"), f"{where}.model", base, "model", problems)
        else:
            components.judge(spec, where)
    except Exception as exc:
        problems.add_error(where, exc)


def _check_tasks(tasks: list, problems: _Problems) -> None:
    from ..eval.benchmarks import OFFLINE_PACK, offline_tasks
    from ..registry import did_you_mean

    shipped = offline_tasks()
    unknown = [(i, t) for i, t in enumerate(tasks) if t != OFFLINE_PACK and t not in shipped]
    # The shipped pack's namespace needs no lm-eval index to tell a typo.
    if any(not str(t).startswith("trl_plus_") for _, t in unknown):
        try:
            from lm_eval.tasks import TaskManager

            known = set(TaskManager().all_tasks)
        except Exception:
            # lm-eval indexes its task files on disk, which works offline; should building
            # the index fail (a broken install, a task file it cannot parse), the eval stage
            # reports unknown tasks itself, so hub task names go unchecked here.
            known = {t for _, t in unknown if not str(t).startswith("trl_plus_")}
        unknown = [(i, t) for i, t in unknown if t not in known]
    for i, task in unknown:
        problems.add(f"eval.tasks[{i}]", f"unknown lm-eval task {task!r}.{did_you_mean(str(task), shipped)} "
                                          f"Shipped offline tasks: {', '.join(shipped)} (or {OFFLINE_PACK!r})")


def _check_pairs_dataset(name: Any, base: Path, hooks, problems: _Problems) -> None:
    where = "stages.pairs.dataset"
    resolved = _check_ref(name, where, base, "dataset", problems)
    if resolved is None or not Path(resolved).exists():
        return  # a hub dataset: the pairs stage loads it (downloading it here would be the same cost twice)
    from ..loading import require_columns

    try:
        dataset = hooks.load_dataset({"path": resolved, "split": "train"})
        require_columns(dataset, ["prompt", "chosen", "rejected"], where)
    except Exception as exc:
        problems.add_error(where, exc)
