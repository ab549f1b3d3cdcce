"""Every hook trl-plus calls, grouped by phase.

A plugin implements any subset of these with ``@trl_plus.hookimpl``, and may accept
fewer arguments than a spec lists (so adding an argument never breaks a plugin). Hooks
evolve only by adding arguments.

Trainers and the CLI never call ``pm.hook.*`` directly: they go through
:class:`trl_plus.manager.Hooks`, which names the plugin when one raises.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("trl_plus")

# ---------------------------------------------------------------------------------------
# Registration hooks: called once per plugin when the registries are first needed.
# Each receives a typed register; ``register.add(name, factory)`` adds a component that a
# recipe can then pick by name, the recipe's keys arriving as keyword arguments.
# ---------------------------------------------------------------------------------------


@hookspec
def trl_plus_register_reward_sources(register: Any) -> None:
    """Add reward sources.

    A reward source scores a batch of (prompt, completion) texts:
    ``source(prompts: list[str], completions: list[str], **columns) -> list[float | None]``
    with one entry per completion; ``None`` means "no opinion on this pair". ``columns``
    holds any other dataset columns of the batch.

    Called once, when the reward-source registry is first built.

    :param register: a :class:`trl_plus.registry.Register`; call
        ``register.add(name, factory)``. A name already taken is a :class:`PluginError`
        that names both plugins.
    """


@hookspec
def trl_plus_register_kl_schedules(register: Any) -> None:
    """Add KL schedules (the KL strength over training: PPO's ``kl_coef``, DPO's ``beta``).

    A schedule is ``schedule(step: int, stats: Mapping[str, float]) -> float``. ``step`` is
    the optimizer step; ``stats`` holds what the trainer measured last (keys are only ever
    added, never removed or renamed):

    - ``kl``: the measured KL (PPO: mean per-sequence KL to the reference over the last
      rollout; DPO: an offline proxy), absent before the first measurement;
    - ``samples`` (PPO): the cumulative number of samples (episodes, completions) in all
      rollouts so far, summed over processes; 0 before the first rollout. Horizons in
      samples (the adaptive controller's) count in it;
    - PPO also passes ``kl_per_token`` and ``reward``; DPO its ``logratio/*`` means.

    A schedule may keep state (the adaptive controller does). It must return a finite
    value > 0 (PPO also takes 0: no KL penalty at that rollout).

    Called once, when the KL-schedule registry is first built.

    :param register: a :class:`trl_plus.registry.Register`.
    """


@hookspec
def trl_plus_register_data_filters(register: Any) -> None:
    """Add data filters, used on datasets before tokenisation and on PPO rollouts.

    A filter is ``filter(batch: dict[str, list]) -> list[bool]`` (True keeps the row).
    On a dataset the batch holds its columns; on a PPO rollout it holds ``prompt``,
    ``completion``, ``reward`` and one ``reward/<source>`` column per reward source.

    Called once, when the data-filter registry is first built.

    :param register: a :class:`trl_plus.registry.Register`.
    """


@hookspec
def trl_plus_register_judges(register: Any) -> None:
    """Add pairwise judges for evaluation.

    A judge is ``judge(prompts, completions_a, completions_b) -> list[float | None]``:
    the probability that A is better than B, or ``None`` when the judge failed on that
    pair (counted as failed, never dropped).

    Called once, when the judge registry is first built.

    :param register: a :class:`trl_plus.registry.Register`.
    """


@hookspec
def trl_plus_register_trainer_kinds(register: Any) -> None:
    """Add trainer kinds: ``register.add(name, TrainerKind(...))``.

    A :class:`trl_plus.protocols.TrainerKind` names the trainer and config classes (loaded
    on first use), and whether it trains on preference pairs or on prompts. A recipe picks
    one with ``trainer: <name>`` and configures it in the section of the same name.
    Called once, when the trainer-kind registry is first built.

    :param register: a :class:`trl_plus.registry.Register`.
    """


@hookspec
def trl_plus_register_recipe_sections(register: Any) -> None:
    """Add top-level recipe sections: ``register.add(key, RecipeSection(...))``.

    A :class:`trl_plus.protocols.RecipeSection` validates its section and declares which
    of its keys hold paths relative to the recipe. The comparison pipeline (``stages:``,
    ``gold:``, ``report:``) and the evaluation (``eval:``) register theirs this way.
    Called once, when the recipe-section registry is first built.

    :param register: a :class:`trl_plus.registry.Register`.
    """


# ---------------------------------------------------------------------------------------
# Decision hooks: a plugin may take over a choice. Stops at first non-None result; the
# built-in implementation is ``trylast``, so any plugin's answer wins over it.
# ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def trl_plus_load_model(name_or_path: str, role: str, init_kwargs: dict) -> Any:
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
def trl_plus_load_dataset(spec: dict) -> Any:
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
def trl_plus_recipe_loaded(recipe: Any) -> None:
    """A recipe was loaded and validated, before any model is loaded.

    :param recipe: the :class:`trl_plus.recipe.Recipe` (read-only by convention).
    """


@hookspec
def trl_plus_trainer_created(trainer: Any, recipe: Any) -> None:
    """A trl-plus trainer finished its construction, before training starts.

    :param trainer: the ``trl_plus.DPOTrainer`` or ``trl_plus.PPOTrainer``.
    :param recipe: the recipe it came from, or None when built from Python.
    """


@hookspec
def trl_plus_rollout_scored(trainer: Any, step: int, prompts: list, completions: list, rewards: dict) -> None:
    """A PPO rollout batch was generated and scored, before the rollout filters run.

    :param trainer: the PPO trainer.
    :param step: the global step.
    :param prompts: the prompt texts of the batch (this process's part).
    :param completions: the completion texts, aligned with ``prompts``.
    :param rewards: ``{"reward": [...], "reward/<source>": [...]}``: the combined
        score and each source's score per completion.
    """


@hookspec
def trl_plus_step_end(trainer: Any, step: int, metrics: dict) -> None:
    """A training step ended with logged metrics (called at every logging step).

    :param trainer: the trainer.
    :param step: the global step.
    :param metrics: the logged values (``loss``, ``beta`` or ``kl_coef``, ...).
    """


@hookspec
def trl_plus_evaluation_done(results: dict, output_dir: str) -> None:
    """An evaluation finished and wrote its results.

    :param results: the content of ``eval.json``.
    :param output_dir: where it was written.
    """
