"""Every hook trl-plus calls, grouped by phase.

A plugin implements any subset of these with ``@trl_plus.hookimpl``, and may accept
fewer arguments than a spec lists (so adding an argument never breaks a plugin). Hooks
evolve only by adding arguments.

Trainers and the CLI never call ``pm.hook.*`` directly: they go through
:class:`trl_plus.manager.Hooks`, which names the plugin when one raises. Registration
hooks too are called through pluggy, one plugin at a time (so that each register knows
which plugin adds): a ``wrapper=True`` or ``hookwrapper=True`` implementation runs its
code before and after its ``yield`` around no other plugin's.

The components a registration hook adds are described, as types, in
:mod:`trl_plus.protocols`. This module is a leaf of the import graph: of trl-plus, it
imports that module alone. Annotations are not evaluated (PEP 563): types of other packages
(``transformers``, ``datasets``) are imported for type checkers only, and the recipe's type
(:class:`trl_plus.recipe.Recipe`, a layer above) is named by its full dotted path, never
imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import pluggy

from .protocols import DataFilter, Judge, KLSchedule, RecipeSection, Register, RewardSource, TrainerKind

if TYPE_CHECKING:  # other packages' types, for type checkers only
    import datasets
    import transformers

hookspec = pluggy.HookspecMarker("trl_plus")

# ---------------------------------------------------------------------------------------
# Registration hooks: called once per plugin when the registries are first needed.
# Each receives a typed register (trl_plus.protocols.Register); ``register.add(name,
# factory)`` adds a component that a recipe can then pick by name, the recipe's keys
# arriving as keyword arguments of ``factory``, which builds the component.
# ---------------------------------------------------------------------------------------


@hookspec
def trl_plus_register_reward_sources(register: Register[Callable[..., RewardSource]]) -> None:
    """Add reward sources (:class:`trl_plus.protocols.RewardSource`).

    A reward source scores a batch of (prompt, completion) texts:
    ``source(prompts: list[str], completions: list[str], **columns) -> list[float | None]``
    with one entry per completion; ``None`` means "no opinion on this pair". ``columns``
    holds any other dataset columns of the batch.

    Called once, when the reward-source registry is first built.

    :param register: a :class:`trl_plus.protocols.Register`; call
        ``register.add(name, factory)``, ``factory(**recipe_keys)`` returning the source.
        A name already taken is a :class:`PluginError` that names both plugins.
    """


@hookspec
def trl_plus_register_kl_schedules(register: Register[Callable[..., KLSchedule]]) -> None:
    """Add KL schedules (:class:`trl_plus.protocols.KLSchedule`): the KL strength over
    training, PPO's ``kl_coef`` and the ``beta`` of DPO, RLOO and GRPO.

    A schedule is a :class:`trl_plus.protocols.KLSchedule`: ``schedule(step, stats) -> float``,
    ``stats`` holding what the trainer measured last (``kl``, PPO's ``samples``, ...; the
    protocol lists every key).

    It must return a finite value > 0 (PPO also takes 0: no KL penalty at that rollout).
    A schedule may keep state (the adaptive controller does): with the optional methods
    ``state() -> dict`` (JSON values) and ``load_state(state: dict)`` a checkpoint keeps
    it, and a resumed run continues the schedule rather than restarting it.

    Called once, when the KL-schedule registry is first built.

    :param register: a :class:`trl_plus.protocols.Register`; ``factory(**recipe_keys)``
        returns the schedule.
    """


@hookspec
def trl_plus_register_data_filters(register: Register[Callable[..., DataFilter]]) -> None:
    """Add data filters (:class:`trl_plus.protocols.DataFilter`), used on datasets before
    tokenisation and on PPO rollouts.

    A filter is ``filter(batch: dict[str, list]) -> list[bool]`` (True keeps the row).
    On a dataset the batch holds its columns; on a PPO rollout it holds ``prompt``,
    ``completion``, ``reward`` and one ``reward/<source>`` column per reward source.
    Optional: ``filter_token_lengths(lengths)``, the same decision from per-row token
    counts (run after TRL has tokenised a preference dataset, on its own counts), and
    ``reasons``, a dict of counts of why rows were dropped (copied into the filter report).

    Called once, when the data-filter registry is first built.

    :param register: a :class:`trl_plus.protocols.Register`; ``factory(**recipe_keys)``
        returns the filter.
    """


@hookspec
def trl_plus_register_judges(register: Register[Callable[..., Judge]]) -> None:
    """Add pairwise judges for evaluation (:class:`trl_plus.protocols.Judge`).

    A judge is ``judge(prompts, completions_a, completions_b) -> list[float | None]``:
    the probability that A is better than B, or ``None`` when the judge failed on that
    pair (counted as failed, never dropped). Optional: ``failures``, a list of why
    requests failed, counted in the evaluation's results.

    Called once, when the judge registry is first built.

    :param register: a :class:`trl_plus.protocols.Register`; ``factory(**recipe_keys)``
        returns the judge.
    """


@hookspec
def trl_plus_register_trainer_kinds(register: Register[TrainerKind]) -> None:
    """Add trainer kinds: ``register.add(name, TrainerKind(...))``.

    A :class:`trl_plus.protocols.TrainerKind` names the trainer and config classes (loaded
    on first use), and whether it trains on preference pairs or on prompts. A recipe picks
    one with ``trainer: <name>`` and configures it in the section of the same name.
    Called once, when the trainer-kind registry is first built.

    :param register: a :class:`trl_plus.protocols.Register`.
    """


@hookspec
def trl_plus_register_recipe_sections(register: Register[RecipeSection]) -> None:
    """Add top-level recipe sections: ``register.add(key, RecipeSection(...))``.

    A :class:`trl_plus.protocols.RecipeSection` validates its section and declares which
    of its keys hold paths relative to the recipe. The comparison pipeline (``stages:``,
    ``gold:``, ``report:``) and the evaluation (``eval:``) register theirs this way.
    Called once, when the recipe-section registry is first built.

    :param register: a :class:`trl_plus.protocols.Register`.
    """


# ---------------------------------------------------------------------------------------
# Decision hooks: a plugin may take over a choice. Stops at first non-None result; the
# built-in implementation is ``trylast``, so any plugin's answer wins over it.
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def trl_plus_load_model(
    name_or_path: str, role: Literal["policy", "reference", "reward", "critic"], init_kwargs: dict[str, Any]
) -> transformers.PreTrainedModel | None:
    """Load a model for one role of a run.

    Stops at first non-None result.

    :param name_or_path: the recipe's model name: a local directory, a hub id, or
        ``tiny:<kind>`` for the tiny offline model.
    :param role: ``"policy"``, ``"reference"`` (causal LMs), ``"reward"`` or ``"critic"``
        (sequence-classification models with one label).
    :param init_kwargs: keyword arguments for ``from_pretrained`` (``dtype``,
        ``revision``, ``trust_remote_code``).
    :return: a ``transformers.PreTrainedModel``, or None to leave the choice to others.
    """


@hookspec(firstresult=True)
def trl_plus_load_dataset(spec: dict[str, Any]) -> datasets.Dataset | None:
    """Load one dataset split named by a recipe's ``data`` section.

    Stops at first non-None result.

    :param spec: the split's settings: ``path`` (a local file or directory, or a hub
        id), ``name``, ``split``, ``data_files``; paths already resolved against the
        recipe's folder.
    :return: a ``datasets.Dataset``, or None to leave the choice to others.
    """


# ---------------------------------------------------------------------------------------
# Lifecycle hooks: called on every plugin, results ignored. Called once per run, step or
# batch, never per token or per sample.
# ---------------------------------------------------------------------------------------


@hookspec
def trl_plus_recipe_loaded(recipe: trl_plus.recipe.Recipe) -> None:
    """A recipe was loaded and validated, before any model is loaded.

    :param recipe: the :class:`trl_plus.recipe.Recipe` (read-only by convention).
    """


@hookspec
def trl_plus_trainer_created(trainer: transformers.Trainer, recipe: trl_plus.recipe.Recipe | None) -> None:
    """A trl-plus trainer finished its construction, before training starts.

    :param trainer: the ``trl_plus.DPOTrainer`` or ``trl_plus.PPOTrainer``.
    :param recipe: the recipe it came from, or None when built from Python.
    """


@hookspec
def trl_plus_rollout_scored(
    trainer: trl_plus.PPOTrainer,
    step: int,
    prompts: list[str],
    completions: list[str],
    rewards: dict[str, list[float | None]],
) -> None:
    """A PPO, RLOO or GRPO rollout batch was generated and scored, before the rollout filters run.

    :param trainer: the PPO, RLOO or GRPO trainer.
    :param step: the global step.
    :param prompts: the prompt texts of the batch (this process's part).
    :param completions: the completion texts, aligned with ``prompts``.
    :param rewards: ``{"reward": [...], "reward/<source>": [...]}``: the combined
        score and each source's score per completion (None where it has none).
    """


@hookspec
def trl_plus_step_end(trainer: transformers.Trainer, step: int, metrics: dict[str, float]) -> None:
    """A training step ended with logged metrics (called at every logging step).

    :param trainer: the trainer.
    :param step: the global step.
    :param metrics: the logged values (``loss``, ``beta`` or ``kl_coef``, ...).
    """


@hookspec
def trl_plus_evaluation_done(results: dict[str, Any], output_dir: str | None) -> None:
    """An evaluation finished and wrote its results.

    :param results: the content of ``eval.json``.
    :param output_dir: where it was written, or None when it was only returned.
    """
