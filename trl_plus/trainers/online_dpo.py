"""``trl_plus.OnlineDPOTrainer``: online (iterative) DPO, ``trl_plus.DPOTrainer`` on pairs
drawn fresh from the policy every round.

Training goes in rounds of ``steps_per_round`` optimizer steps. At the start of each round
the current policy samples ``samples_per_prompt`` completions per prompt, the recipe's
reward sources score them, and each prompt's best and worst completion become a
(prompt, chosen, rejected) pair (``online_rounds.draw_round``); the data filters and TRL's
tokenisation run on the pairs as on any DPO data (``DPOTrainer._prepare_dataset``), and
DPO trains on them. The reference model is the initial one throughout (it is never synced).

How it sits in the Trainer's loop: each round is one epoch. ``get_train_dataloader``
returns :class:`_Rounds`, whose length is the round's micro-batches
(``steps_per_round x gradient_accumulation_steps``); every pass over it draws the round
and yields the batches of a dataloader over its pairs (repeated or cut to fill exactly
that many batches). A resume from a checkpoint inside a round (a signal's save, or a
``save_steps`` that does not divide the rounds) draws that round afresh for its remaining
steps (``get_resumed_dataloader``).
"""

from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass, field

import trl

from ..data.prepare import prepare_dataset
from ..data.report import write_filter_report
from ..data.rows import DataOptions
from ..errors import DataError, RecipeError
from .common import hooks_for, restore_rollout_counts, rollout_counts_state, tokenizer_of
from .dpo import DPOConfig, DPOTrainer

__all__ = ["OnlineDPOTrainer", "OnlineDPOConfig", "ONLINE_DPO_STATE", "check_recipe", "build_trainer"]

ONLINE_DPO_STATE = "online_dpo_state.json"  # the round reached, beta and the schedule's state, the rounds' logs


def _at_least(name: str, value, low: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{why}, got {value!r}")


@dataclass
class OnlineDPOConfig(DPOConfig):
    """``trl_plus.DPOConfig`` plus the rounds of online DPO, so that a recipe's ``online_dpo:``
    section can set them. The run lasts ``rounds x steps_per_round`` optimizer steps
    (``max_steps`` is set to that); with ``rounds`` unset, ``max_steps`` decides and the last
    round may be cut short."""

    rounds: int | None = field(
        default=None,
        metadata={"help": "Rounds of sampling and training; None: as many as max_steps needs."},
    )
    samples_per_prompt: int = field(
        default=4,
        metadata={"help": "Completions sampled per prompt each round (>= 2): the best is chosen, the worst rejected."},
    )
    prompts_per_round: int | None = field(
        default=None,
        metadata={"help": "Prompts drawn at random (seeded) from the prompt data each round; None: all of them."},
    )
    steps_per_round: int = field(
        default=8, metadata={"help": "Optimizer steps of DPO on each round's pairs."},
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the round's completions."})
    max_completion_length: int = field(
        default=64, metadata={"help": "Most tokens a sampled completion may have."},
    )
    generation_batch_size: int = field(
        default=64, metadata={"help": "Completions generated at once while sampling a round."},
    )
    max_unscored_batches: int = field(
        default=3,
        metadata={"help": "Stop with an error after this many draws in a row in which no completion got a score; "
                          "0 turns the check off."},
    )

    def __post_init__(self):
        _at_least("samples_per_prompt", self.samples_per_prompt, 2, " (a pair needs two completions of a prompt)")
        _at_least("steps_per_round", self.steps_per_round, 1)
        for name in ("rounds", "prompts_per_round"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1, " (or None)")
        _at_least("max_completion_length", self.max_completion_length, 1)
        _at_least("generation_batch_size", self.generation_batch_size, 1)
        _at_least("max_unscored_batches", self.max_unscored_batches, 0, " (0: no check)")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a number > 0, got {self.temperature!r}")
        for name, why in (("precompute_ref_log_probs", "the pairs change every round"),
                          ("ref_logps_cache", "the pairs change every round"),
                          ("sync_ref_model", "online DPO keeps the initial model as its reference")):
            if getattr(self, name):
                raise ValueError(f"{name} cannot be used with online DPO: {why}")
        if self.rounds is not None:
            planned = self.rounds * self.steps_per_round
            if self.max_steps > 0 and self.max_steps != planned:
                raise ValueError(f"max_steps must be rounds x steps_per_round ({self.rounds} x {self.steps_per_round}"
                                 f" = {planned}) when both are set, got {self.max_steps}; set one of them")
            self.max_steps = planned
        elif self.max_steps <= 0:
            raise ValueError("rounds must be set (the rounds of sampling and training), or max_steps")
        super().__post_init__()

    @property
    def round_count(self) -> int:
        """The rounds the run has (the last one possibly cut short by max_steps)."""
        return self.rounds if self.rounds is not None else math.ceil(self.max_steps / self.steps_per_round)


class _Rounds:
    """The training batches, one round per pass (one epoch of the Trainer's loop)."""

    def __init__(self, trainer: OnlineDPOTrainer, batches: int):
        self.trainer, self.batches, self.skip = trainer, batches, 0

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        wanted, self.skip = self.batches - self.skip, 0
        yield from self.trainer._round_dataloader(wanted)


class OnlineDPOTrainer(DPOTrainer):
    """Online (iterative) DPO: ``trl_plus.DPOTrainer`` on pairs sampled from the current policy
    each round and labelled by the reward sources (see the module).

    Takes ``trl.DPOTrainer``'s arguments, with ``args`` an :class:`OnlineDPOConfig` (required:
    it holds the rounds) and ``train_dataset`` the prompts (a ``prompt`` column), plus
    ``trl_plus.DPOTrainer``'s keyword-only ``rewards`` (required: they label the pairs),
    ``kl``, ``filters`` (run on each round's pairs), ``plugin_manager``, ``recipe`` and
    ``load_reports``, and ``rollout_filters`` (run on each round's scored completions: a
    dropped one is in no pair). An ``eval_dataset``, if any, holds preference pairs.
    """

    _tag_names = ["trl", "trl-plus", "online-dpo"]
    state_file = ONLINE_DPO_STATE
    recipe_section = "online_dpo"  # where max_unscored_batches is set, for the nothing-scored guard

    def __init__(self, *args, rollout_filters=None, **kwargs):
        if kwargs.get("ref_logps_cache"):
            raise ValueError("ref_logps_cache cannot be used with online DPO: the pairs change every round")
        try:
            bound = inspect.signature(trl.DPOTrainer.__init__).bind(
                self, *args, **{k: v for k, v in kwargs.items() if k not in _OWN_KWARGS})
        except TypeError as exc:
            raise TypeError(f"{type(self).__name__}: {exc}") from None
        config = bound.arguments.get("args")
        if not isinstance(config, OnlineDPOConfig):
            raise TypeError(f"{type(self).__name__} needs args=, an OnlineDPOConfig (its rounds, samples_per_prompt, "
                            f"...), got {type(config).__name__}")
        if not kwargs.get("rewards"):
            raise RecipeError(f"{type(self).__name__} needs rewards= (reward sources): they label each round's pairs",
                              "rewards")
        prompts = bound.arguments.get("train_dataset")
        if prompts is None or not hasattr(prompts, "column_names") or "prompt" not in (prompts.column_names or ()):
            raise DataError(f"{type(self).__name__}'s train_dataset holds the prompts: a datasets.Dataset with a "
                            "'prompt' column")
        self._prompts_given = prompts
        self.prompt_dataset = None  # the prompts, once checked (while the parent is built)
        processing_class = bound.arguments.get("processing_class")
        tokenizer = tokenizer_of(processing_class) if processing_class is not None else None
        components = hooks_for(kwargs.get("plugin_manager")).components(tokenizer=tokenizer)
        self._rollout_chain = components.filter_chain(rollout_filters, "rollout_filters")
        self._round_logs: dict = {}
        self._history: list[dict] = []  # every round's logs, kept in the state file
        self._samples = 0  # completions sampled so far (all processes): the KL schedule's sample count
        self._rollout_dropped = 0
        self._rollout_unscored = 0
        super().__init__(*args, **kwargs)

    # -- data: the prompts, then each round's pairs -------------------------------------------------
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if dataset is self._prompts_given and self.prompt_dataset is None:  # the prompts: row checks only
            self.prompt_dataset = prepare_dataset(
                dataset, ("prompt",), dataset_name, options=DataOptions.of(self.recipe),
                processing_class=processing_class, reports=self._filter_reports, output_dir=args.output_dir,
                load_report=self._load_reports.get(dataset_name),
            )
            return self.prompt_dataset
        missing = [c for c in ("prompt", "chosen", "rejected") if c not in (dataset.column_names or ())]
        if missing:
            raise DataError(f"the {dataset_name} dataset of online DPO holds preference pairs (DPO's eval metrics are "
                            f"computed on them); it has no column {missing[0]!r} (columns: "
                            f"{', '.join(dataset.column_names or ())})")
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def get_train_dataloader(self):
        return _Rounds(self, self.args.steps_per_round * self.args.gradient_accumulation_steps)

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        if isinstance(dataloader, _Rounds):  # inside a round: draw it afresh for the batches left
            dataloader.skip = num_batches
            return dataloader
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _round_dataloader(self, batches: int):
        """The round that starts now: drawn, its pairs prepared, and a dataloader of exactly
        ``batches`` batches over them."""
        import datasets

        from .online_rounds import draw_round

        index = self.state.global_step // self.args.steps_per_round
        drawn = draw_round(self, index)
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # the pairs' preparation, every round: no bars
        try:
            pairs = self._prepare_dataset(datasets.Dataset.from_list(drawn.pairs), self.processing_class, self.args,
                                          "pairs")
        finally:
            if bars:
                datasets.enable_progress_bars()
        self._round_logs = {**drawn.logs, "online_dpo/pairs": float(len(pairs))}
        self._history = [h for h in self._history if h.get("online_dpo/round") != index + 1]
        self._history.append({"step": self.state.global_step, **self._round_logs})
        if self.is_world_process_zero():
            self._write_filter_report()
        rows = batches * self._train_batch_size * self.args.world_size
        order = list(range(len(pairs)))
        random.Random(self.args.seed * 1_000_003 + index).shuffle(order)
        self.train_dataset = pairs.select([order[i % len(order)] for i in range(rows)])
        return super().get_train_dataloader()

    def _write_filter_report(self) -> None:
        write_filter_report(self.args.output_dir, self._filter_reports, rollouts=self._rollout_chain)

    # -- the KL schedule: DPO's measurements, plus the samples and reward so far ---------------------
    def _measured_stats(self) -> dict:
        stats = super()._measured_stats()
        stats["samples"] = self._samples
        if "reward" in self._round_logs:
            stats["reward"] = self._round_logs["reward"]
        return stats

    # -- saving and resuming: the round reached, with DPO's state -------------------------------------
    def _checkpoint_state(self) -> dict:
        step, per_round = self.state.global_step, self.args.steps_per_round
        state = super()._checkpoint_state() or {"beta": float(self.beta)}
        state.update(
            rounds_done=step // per_round, round_step=step % per_round, steps_per_round=per_round,
            samples=self._samples, rounds=self._history,
            rollouts=rollout_counts_state(self),
        )
        return state

    def _restore_state(self, state: dict) -> None:
        saved = state.get("steps_per_round")
        if saved is not None and saved != self.args.steps_per_round:
            raise RecipeError(f"the checkpoint was trained with steps_per_round {saved}, this run sets "
                              f"{self.args.steps_per_round}: resume with the same, or its rounds would shift",
                              "online_dpo.steps_per_round")
        super()._restore_state(state)
        self._samples = int(state.get("samples") or 0)
        self._history = list(state.get("rounds") or [])
        restore_rollout_counts(self, state.get("rollouts"))

    # -- logging: the round's numbers with every training row -----------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._round_logs and self.model.training:
            logs.update(self._round_logs)
            logs["rollouts/dropped_total"] = float(self._rollout_dropped)
            logs["rollouts/unscored_total"] = float(self._rollout_unscored)
        super().log(logs, start_time)


# trl_plus.DPOTrainer's keyword-only arguments: not TRL's, left out of the binding to TRL's signature.
_OWN_KWARGS = frozenset(inspect.signature(DPOTrainer.__init__).parameters) - {"self", "args", "kwargs"}


def check_recipe(recipe) -> None:
    """What the ``online_dpo`` kind refuses before any model loads (its ``check``): a recipe
    without a reward source (nothing would label the pairs)."""
    if not recipe.rewards:
        raise RecipeError(f"trainer {recipe.trainer!r} needs at least one reward source: they label each round's "
                          "pairs", "rewards")


def build_trainer(trainer_class, model, **kwargs):
    """The ``online_dpo`` kind's trainer (its ``build``): DPO's, with the reference model loaded
    as for ``dpo``, and the recipe's rollout filters passed on."""
    from .dpo import build_trainer as build_dpo

    rollout_filters = [f.model_dump() for f in kwargs["recipe"].rollout_filters]
    return build_dpo(trainer_class, model, rollout_filters=rollout_filters, **kwargs)
