"""What a plugin provides, as types: the two descriptors the built-in plugins register
(trainer kinds, recipe sections), the components a registration hook adds (reward sources,
KL schedules, data filters, judges) and the register each registration hook receives.

The components are :class:`typing.Protocol` classes: a plugin's function or class matches
one by its shape, with no subclassing and no import of this module. A Protocol cannot make
a member optional, so the optional members (a schedule's ``state`` / ``load_state``, a
filter's ``filter_token_lengths`` and ``reasons``, a judge's ``failures``, a reward
source's ``trl_plus_ref``) are described in the docstrings, and the core looks for each
with ``hasattr`` / ``getattr`` where it uses it.

Nothing here imports torch, TRL or another trl-plus module: every layer may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar


# -- descriptors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainerKind:
    """One kind of trainer a recipe can name with ``trainer: <name>``.

    Its configuration lives in the recipe section of the same name (``dpo:``, ``ppo:``).
    ``load()`` imports the trainer and config classes on first use, so describing the
    kinds (``trl-plus validate --no-import``, ``trl-plus plugins``) imports no torch.

    ``trl_plus.trainers.from_recipe.train_from_recipe`` trains every kind the same way:
    the tokenizer and the data (which must have :attr:`columns`), ``check(recipe)`` (what
    the kind refuses, before any model loads), the config, the policy model, then
    ``build(trainer_class, model, **kwargs)``, which makes the trainer and loads what only
    its kind needs (DPO's reference model, PPO's critic). ``kwargs`` are the trainer's
    keyword arguments: ``args``, ``train_dataset``, ``eval_dataset``, ``processing_class``,
    ``peft_config``, the components (``rewards``, ``kl``, ``filters``), ``plugin_manager``,
    ``recipe`` and ``load_reports``. Without a ``build``: ``trainer_class(model, **kwargs)``.

    ``kl_field``: the config field that holds the kind's KL strength (``beta`` for DPO,
    PPO, RLOO and GRPO), the knob the comparison pipeline sweeps when the kind is an arm of
    ``stages:``: ``stages.<name>.<kl_field>s`` lists the values, each run's folder is
    ``<name>/<kl_field><value>-seed<n>`` and its config gets the value under ``kl_field``
    (the pipeline's own PPO stages, ``ppo`` and ``ppo_gt``, keep their ``kl_coefs`` and
    ``kl_targets``). None: the kind trains, but cannot be an arm of a comparison.
    """

    name: str
    consumes: Literal["pairs", "prompts"]
    load: Callable[[], tuple[type, type]]
    description: str = ""
    build: Callable[..., Any] | None = None
    check: Callable[[Any], None] | None = None
    kl_field: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns its data must have: a preference pair's, or the prompt."""
        return ("chosen", "rejected") if self.consumes == "pairs" else ("prompt",)

    @property
    def trainer_class(self) -> type:
        return self.load()[0]

    @property
    def config_class(self) -> type:
        return self.load()[1]


@dataclass(frozen=True)
class RecipeSection:
    """A top-level recipe section owned by a plugin rather than by the core schema.

    ``check(recipe, hooks, problems, deep)`` validates the section of a loaded recipe
    (``recipe.raw[key]``; called only when the recipe has it) and adds each problem under
    its key path; with ``deep`` it also checks what the section points to (files, datasets),
    as ``trl-plus validate`` does. What it returns (a parsed config) is kept in
    ``recipe.parsed[key]``. No ``check``: the section is free-form, or claimed by another.

    The keys whose values are paths, made absolute against the recipe's folder when it
    loads (dotted, relative to the section, ``*`` for every list item or mapping value):
    ``path_keys`` a model folder or hub id (a name that is no local path stays as it is),
    ``data_keys`` a data file or dataset (a path, or a mapping with ``path``), ``file_keys``
    a local file (always made absolute); ``references``: the section holds component specs,
    whose ``file.py:attr`` references and reward-model folders are re-based too.

    ``standalone``: a recipe with this section is run by it (a pipeline's ``stages:``, with
    ``trl-plus compare``), so it needs no ``trainer``, ``model`` or ``data``. ``claims``:
    the sections its check validates itself when the recipe has it (``stages:`` checks
    ``eval:`` as its eval stage runs it); their own checks are then skipped.
    """

    key: str
    check: Callable[..., Any] | None = None
    path_keys: tuple[str, ...] = ()
    data_keys: tuple[str, ...] = ()
    file_keys: tuple[str, ...] = ()
    references: bool = False
    standalone: bool = False
    claims: tuple[str, ...] = ()
    description: str = ""


# -- components: what a registration hook's factories build ---------------------------------

# Parameters the core fills in when a factory asks for them: they are context, not recipe
# keys. ``tokenizer``: the run's tokenizer; ``components``: a
# :class:`trl_plus.components.Components` that builds other components from specs (how a
# filter uses a reward source, or a judge a reward source).
CONTEXT_PARAMETERS = ("tokenizer", "components")


class RewardSource(Protocol):
    """Scores a batch of (prompt, completion) texts.

    Called as ``source(prompts, completions, **columns)``: ``columns`` holds any other
    dataset columns of the batch (PPO: each prompt's row), one value per completion.
    Returns one entry per completion: a finite number, or ``None`` for "no opinion on this
    pair". Every answer is checked (:mod:`trl_plus.reward_checks`): a wrong length, a
    non-number, a NaN or an infinity is an error naming the source.

    Optional (looked up with ``getattr``): ``trl_plus_ref``, a short, secret-free text
    saying what the source is (``"python: mod:fn"``, ``"http: https://host/score"``), shown
    after its name in errors.
    """

    def __call__(self, prompts: list[str], completions: list[str], **columns: list[Any]) -> list[float | None]: ...


class KLSchedule(Protocol):
    """The KL strength over training: PPO's ``kl_coef``, the ``beta`` of DPO, RLOO and GRPO.

    Called as ``schedule(step, stats)``: ``step`` is the optimizer step; ``stats`` holds
    what the trainer measured last (keys are only ever added, never removed or renamed):

    - ``kl``: the measured KL (PPO: mean per-sequence KL to the reference over the last
      rollout; RLOO, GRPO: TRL's per-token KL times the last rollout's mean completion
      length; DPO: an offline proxy), absent before the first measurement;
    - ``samples`` (PPO, RLOO, GRPO): the cumulative number of samples (episodes, completions) in all
      rollouts so far, summed over processes; 0 before the first rollout. Horizons in
      samples (the adaptive controller's) count in it;
    - PPO, RLOO and GRPO also pass ``kl_per_token`` and ``reward``; DPO its ``logratio/*`` means.

    Returns a finite value > 0 (PPO also takes 0: no KL penalty at that rollout); any other
    value stops the run with an error naming the schedule.

    A schedule may keep state (the adaptive controller does). Optional (looked up with
    ``hasattr``), so that a resumed run continues the schedule rather than restarting it:

    - ``state() -> dict``: what a checkpoint keeps, JSON values only;
    - ``load_state(state: dict) -> None``: put back what ``state()`` returned.

    A schedule without them that keeps plain attributes is saved as those attributes (all
    must be JSON values) and restored by setting them again.
    """

    def __call__(self, step: int, stats: Mapping[str, float]) -> float: ...


class DataFilter(Protocol):
    """Keeps or drops the rows of a batch: used on datasets before tokenisation and on PPO
    rollouts.

    Called as ``filter(batch)``: on a dataset the batch holds its columns
    (``{"prompt": [...], "chosen": [...], ...}``); on a PPO rollout it holds ``prompt``,
    ``completion``, ``reward`` and one ``reward/<source>`` column per reward source.
    Returns one decision per row, True to keep it. A filter may keep state across batches
    (dedup does): a dataset is filtered in one pass, in order.

    Optional (looked up with ``hasattr`` / ``getattr``):

    - ``filter_token_lengths(lengths) -> Sequence[bool]``: the same decision from token
      counts. A filter that has it runs on a preference dataset after TRL has tokenised
      it, on TRL's own counts (nothing is tokenised twice): ``lengths`` maps ``prompt``,
      ``chosen``, ``rejected`` (the names a filter sees) to numpy arrays of per-row token
      counts of the rows still in;
    - ``reasons``: a ``dict`` of counts, the filter's own breakdown of what it dropped
      (a row may count under several), copied into the filter report.
    """

    def __call__(self, batch: dict[str, list[Any]]) -> Sequence[bool]: ...


class Judge(Protocol):
    """A pairwise judge for evaluation.

    Called as ``judge(prompts, completions_a, completions_b)`` (three lists of the same
    length). Returns, per pair, the probability that A is better than B (a number in
    [0, 1]), or ``None`` when the judge failed on that pair (counted as failed, never
    dropped).

    Optional (looked up with ``getattr``): ``failures``, a list of texts saying why
    requests failed (a batch given up on after its retries), counted and shown in the
    evaluation's results; never holding a credential.
    """

    def __call__(self, prompts: list[str], completions_a: list[str], completions_b: list[str]) -> list[float | None]: ...


# -- the register a registration hook receives ----------------------------------------------

_Entry = TypeVar("_Entry", contravariant=True)


class Register(Protocol[_Entry]):
    """What a registration hook receives (:class:`trl_plus.registry.Register` is the core's).

    ``register.add(name, factory)`` adds a component under ``name``: a recipe then picks it
    by name, its other keys arriving as keyword arguments of ``factory``, which builds the
    component (a reward source, schedule, filter or judge). A factory may also ask for the
    :data:`CONTEXT_PARAMETERS` by naming them. For trainer kinds and recipe sections the
    entry is the descriptor itself (a :class:`TrainerKind`, a :class:`RecipeSection`).

    ``name``: lower-case letters, digits, ``_``, ``-`` or ``.``, starting with a letter; a
    name another plugin took is an error naming both plugins. ``description`` defaults to
    the first line of the factory's docstring (a descriptor's ``description``).
    """

    @property
    def kind(self) -> str:
        """What this register holds, in words: ``"reward source"``, ``"KL schedule"``, ..."""
        ...

    def add(self, name: str, factory: _Entry, *, description: str | None = None) -> None: ...
