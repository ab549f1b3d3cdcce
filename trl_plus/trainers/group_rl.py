"""What ``trl_plus.RLOOTrainer`` and ``trl_plus.GRPOTrainer`` share: TRL's critic-free trainers
(a baseline from each prompt's group of completions) with trl-plus's reward sources, KL
schedule, data and rollout filters, lifecycle hooks and resumable state.

:class:`GroupRLMixin` goes before the TRL parent (``class RLOOTrainer(GroupRLMixin,
trl.RLOOTrainer)``) and changes TRL at these places only:

- ``__init__`` binds the arguments to the parent's own signature, so every positional and
  keyword argument TRL takes works as it does there; then it builds the components, runs
  the data filters on the prompt dataset and turns the reward sources (``rewards=``) into
  TRL reward functions, one per source, named after its label and weighted by its weight;
- ``_calculate_rewards``: after TRL has called the reward functions, the nothing-scored
  guard, ``trl_plus_rollout_scored`` and the rollout filters. A filter drops a completion by
  marking its scores NaN: TRL then leaves it out of its group's baseline and gives it zero
  advantage, as it does a completion no reward function scored;
- ``_generate_and_score_completions``: the per-source means ``reward/<source>`` and the
  rollout counters; the logged ``reward`` stays the sources' own, dropped completions in;
- ``beta`` follows the KL schedule, set before every optimizer step (a callback), logged as
  ``beta``, and kept in ``<kind>_state.json`` in every checkpoint with the schedule's state,
  the sources' running normalisation and the rollout filters' counts.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate.utils import gather, gather_object
from transformers import TrainerCallback
from trl.trainer.utils import get_config_model_id, nanstd

from ..data.prepare import prepare_dataset
from ..data.report import write_filter_report
from ..data.rows import DataOptions
from ..errors import RecipeError
from ..reward_checks import unscored_guard
from .common import (
    as_text,
    hooks_for,
    restore_reward_norms,
    restore_rollout_counts,
    restore_schedule,
    reward_norms_state,
    rollout_counts_state,
    schedule_state,
    tokenizer_of,
)
from .compute import attach as count_compute
from .ppo_setup import _ensure_reference_loadable, refuse_schedule_without_reference

__all__ = ["GroupRLMixin", "SourceFunc", "check_recipe", "build_trainer", "check_max_unscored"]

# What TRL passes a reward function besides the dataset's columns: not passed on to a reward source.
_TRL_KWARGS = frozenset({"completion_ids", "trainer_state", "log_extra", "log_metric", "environments", "images",
                         "image"})


class SourceFunc:
    """One reward source of a ``RewardMix`` as a TRL reward function. TRL calls it with its
    own keyword arguments; the source gets the texts and the dataset's columns, and its answer
    is checked (and normalised, with ``normalize: true``) as the mix does."""

    def __init__(self, mix, index: int):
        self.mix, self.index = mix, index
        self.__name__ = mix.sources[index].label  # TRL's name for the function: its logs and table column

    def __call__(self, prompts, completions, **kwargs):
        columns = {k: v for k, v in kwargs.items() if k not in _TRL_KWARGS}
        return self.mix.score_source(self.index, [as_text(p) for p in prompts], [as_text(c) for c in completions],
                                     **columns)


class _BetaSchedule(TrainerCallback):
    """Sets ``trainer.beta`` from the KL schedule before every optimizer step."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer._apply_schedule(state.global_step)


def check_max_unscored(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_unscored_batches must be an integer >= 0 (0: no check), got {value!r}")


@dataclass
class UnscoredGuardConfig:
    """Mixed in before a TRL group config: ``max_unscored_batches``, checked, so that a
    recipe's section can set it."""

    max_unscored_batches: int = field(
        default=3,
        metadata={"help": "Stop with an error after this many consecutive rollout batches in which no completion got a "
                          "score (every reward source answered None); 0 turns the check off."},
    )

    def __post_init__(self):
        check_max_unscored(self.max_unscored_batches)
        super().__post_init__()


def _to_list(t: torch.Tensor) -> list:
    return [None if math.isnan(v) else v for v in t.float().cpu().tolist()]


class GroupRLMixin:
    """trl-plus's components on a TRL group trainer (mixed in before it).

    Takes every argument of the TRL parent, plus keyword-only ``rewards``, ``kl``,
    ``filters``, ``rollout_filters``, ``plugin_manager``, ``recipe`` and ``load_reports``
    (as ``trl_plus.PPOTrainer`` documents them); ``reward_funcs`` may be left out when
    ``rewards`` is given. A subclass names its parent, config class and recipe section.
    """

    _trl_parent: type
    config_class: type
    recipe_section: str = ""

    def __init__(self, model=None, reward_funcs=None, *args, rewards=None, kl=None, filters=None, rollout_filters=None,
                 plugin_manager=None, recipe=None, load_reports=None, **kwargs):
        try:
            bound = inspect.signature(self._trl_parent.__init__).bind(self, model, reward_funcs, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{type(self).__name__}: {exc}") from None
        given = bound.arguments
        config = given.get("args")
        if config is None:  # the parent's default config, named as it would name it
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            config = given["args"] = self.config_class(f"{name.split('/')[-1]}-{self.recipe_section.upper()}")
        self.hooks = hooks_for(plugin_manager)
        self.recipe = recipe
        processing_class = given.get("processing_class")
        tokenizer = tokenizer_of(processing_class) if processing_class is not None else None
        components = self.hooks.components(tokenizer=tokenizer)
        self.kl_schedule = components.kl_schedule(kl)
        if self.kl_schedule is not None:
            refuse_schedule_without_reference(config)
        self.reward_mix = components.reward_mix(rewards)
        given["reward_funcs"] = self._reward_funcs(reward_funcs, config, given)
        self._rollout_chain = components.filter_chain(rollout_filters, "rollout_filters")
        self._filter_reports: dict = {}
        given["train_dataset"] = prepare_dataset(
            given.get("train_dataset"), ("prompt",), "train", components.filter_chain(filters),
            options=DataOptions.of(recipe), processing_class=processing_class, reports=self._filter_reports,
            output_dir=config.output_dir, load_report=(load_reports or {}).get("train"),
        )
        self._rollout_dropped = 0
        self._rollout_unscored = 0
        # What the KL schedule is given: the last measurements, and the cumulative sample count.
        self._kl_stats: dict = {"samples": 0}
        self._scored: torch.Tensor | None = None
        if not isinstance(model, str) and config.beta != 0:
            _ensure_reference_loadable(model, config, given.get("peft_config"))
        super().__init__(*bound.args[1:], **bound.kwargs)
        if self.reward_mix is not None:
            weights = [s.weight for s in self.reward_mix.sources]
            self.reward_weights[: len(weights)] = torch.tensor(weights, dtype=self.reward_weights.dtype)
        if self.kl_schedule is not None:
            self._apply_schedule(self.state.global_step)
            self.add_callback(_BetaSchedule(self))
        if self.is_world_process_zero():
            self._write_filter_report()
        count_compute(self)  # compute.json with every save; the rollouts' sampled tokens counted
        self.hooks.trainer_created(trainer=self, recipe=recipe)

    def _reward_funcs(self, reward_funcs, config, given):
        if self.reward_mix is None:
            if reward_funcs is None and given.get("environment_factory") is None:
                raise RecipeError(f"{type(self).__name__} needs rewards= (reward sources) or reward_funcs=", "rewards")
            return reward_funcs
        if reward_funcs:
            raise RecipeError("give rewards= or reward_funcs=, not both", "rewards")
        if config.reward_weights is not None:
            raise RecipeError("with rewards=, each source's weight is its own 'weight' key: leave reward_weights unset",
                              "rewards")
        return [SourceFunc(self.reward_mix, i) for i in range(len(self.reward_mix.sources))]

    # -- scoring ---------------------------------------------------------------------------------
    def _total(self, table: torch.Tensor) -> torch.Tensor:
        """The weighted sum of the reward functions' scores per completion; NaN where none scored."""
        total = (table * self.reward_weights.to(table.device).unsqueeze(0)).nansum(dim=1)
        total[torch.isnan(table).all(dim=1)] = torch.nan
        return total

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        table = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # every process's rows
        training = self.model.training
        unscored_guard(self).check(table, training=training)
        total = self._total(table)
        names = list(self.reward_func_names)
        start = self.accelerator.process_index * len(prompts)
        local = slice(start, start + len(prompts))
        texts = [as_text(p) for p in prompts], [as_text(c) for c in completions]
        rewards = {"reward": _to_list(total[local])}
        rewards.update({f"reward/{n}": _to_list(table[local, i]) for i, n in enumerate(names)})
        self.hooks.rollout_scored(trainer=self, step=self.state.global_step, prompts=texts[0], completions=texts[1],
                                  rewards=rewards)
        self._scored = table
        if not training:
            return table
        keep = ~torch.isnan(total)
        if self._rollout_chain:  # on the whole batch, so every process decides alike
            batch = {"prompt": gather_object(texts[0]), "completion": gather_object(texts[1]),
                     "reward": _to_list(total)}
            batch.update({f"reward/{n}": _to_list(table[:, i]) for i, n in enumerate(names)})
            keep &= torch.tensor(self._rollout_chain.mask(batch), dtype=torch.bool, device=table.device)
        self._rollout_unscored += int(torch.isnan(total).sum().item())
        dropped = int((~keep).sum().item())
        self._rollout_dropped += dropped
        self._metrics["train"]["rollouts/dropped"].append(float(dropped))
        if not dropped:
            return table
        filtered = table.clone()
        filtered[~keep] = torch.nan  # TRL: out of the group's baseline, zero advantage
        return filtered

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        self._scored = None
        out = super()._generate_and_score_completions(inputs)
        table, self._scored = self._scored, None
        if table is None:
            return out
        metrics = self._metrics[mode]
        names = list(self.reward_func_names)
        for i, name in enumerate(names):
            metrics[f"reward/{name}"].append(torch.nanmean(table[:, i]).item())
        if mode != "train":
            return out
        if self._rollout_chain:  # what TRL logged left the dropped completions out: the sources' own instead
            total = self._total(table)
            _replace_last(metrics, "reward", torch.nanmean(total).item())
            _replace_last(metrics, "reward_std", nanstd(total).item())
            for i, name in enumerate(names):
                _replace_last(metrics, f"rewards/{name}/mean", torch.nanmean(table[:, i]).item())
                _replace_last(metrics, f"rewards/{name}/std", nanstd(table[:, i]).item())
                column = self._logs["rewards"][name]  # the completions table's (a deque)
                for _ in range(min(table.size(0), len(column))):
                    column.pop()
                column.extend(table[:, i].tolist())
        lengths = gather(out["completion_mask"].sum(dim=1).float())
        self._kl_stats["samples"] = int(self._kl_stats.get("samples", 0)) + int(table.size(0))
        self._kl_stats["mean_length"] = lengths.mean().item()
        metrics["rollouts/dropped_total"] = [float(self._rollout_dropped)]
        metrics["rollouts/unscored_total"] = [float(self._rollout_unscored)]
        for count in self._rollout_chain.counts:
            metrics[f"rollouts/dropped_total/{count.name}"] = [float(count.dropped)]
        return out

    # -- KL schedule: beta ---------------------------------------------------------------------------
    def _measured_stats(self) -> dict:
        """What the schedule is given: ``kl`` (the mean per-sequence KL: TRL's per-token KL times
        the mean completion length of the last rollout), ``kl_per_token``, ``reward``, ``samples``."""
        metrics = self._metrics["train"]
        kl = [v for v in metrics.get("kl", ()) if math.isfinite(v)]
        if kl:
            per_token = sum(kl) / len(kl)
            self._kl_stats["kl_per_token"] = per_token
            self._kl_stats["kl"] = per_token * self._kl_stats.get("mean_length", 1.0)
        reward = [v for v in metrics.get("reward", ()) if math.isfinite(v)]
        if reward:
            self._kl_stats["reward"] = sum(reward) / len(reward)
        return self._kl_stats

    def _apply_schedule(self, step: int) -> None:
        self.beta = self.kl_schedule(step, dict(self._measured_stats()))

    # -- saving and resuming ---------------------------------------------------------------------
    @property
    def state_file(self) -> str:
        return f"{self.recipe_section}_state.json"

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            state = {"beta": float(self.beta), "kl_stats": self._kl_stats, "schedule": schedule_state(self.kl_schedule),
                     "reward_norms": reward_norms_state(self), "rollouts": rollout_counts_state(self)}
            Path(output_dir or self.args.output_dir, self.state_file).write_text(json.dumps(state, indent=2))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / self.state_file
        if not path.is_file():
            return
        state = json.loads(path.read_text())
        self._kl_stats = dict(state.get("kl_stats") or {"samples": 0})
        if self.kl_schedule is not None:
            self.beta = float(state["beta"])
            restore_schedule(self.kl_schedule, state.get("schedule"))
        restore_reward_norms(self, state.get("reward_norms"))
        restore_rollout_counts(self, state.get("rollouts"))

    # -- logging ---------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        training = self.model.training and not any(k.startswith("eval_") for k in logs)
        if training:
            if self.kl_schedule is not None:
                self._measured_stats()  # TRL's log empties the metrics: read them while they are there
            logs["beta"] = float(self.beta)
        super().log(logs, start_time)
        if training:
            if self.is_world_process_zero() and self._rollout_chain:
                self._write_filter_report()
            self.hooks.step_end(trainer=self, step=self.state.global_step, metrics=dict(logs))

    def _write_filter_report(self) -> None:
        write_filter_report(self.args.output_dir, self._filter_reports, rollouts=self._rollout_chain)


def _replace_last(metrics, key: str, value: float) -> None:
    if metrics.get(key):
        metrics[key][-1] = value


def check_recipe(recipe, config_class: type) -> None:
    """What the ``rloo`` and ``grpo`` kinds refuse before any model loads (their ``check``): no
    reward source, and a KL schedule with ``beta: 0`` (no reference model; GRPO's default)."""
    if not recipe.rewards:
        raise RecipeError(f"trainer {recipe.trainer!r} needs at least one reward source", "rewards")
    if recipe.kl is not None:
        default = next(f.default for f in dataclasses.fields(config_class) if f.name == "beta")
        beta = recipe.trainer_args.get("beta", default)
        refuse_schedule_without_reference(SimpleNamespace(beta=beta))


def build_trainer(trainer_class, model, **kwargs):
    """The ``rloo`` and ``grpo`` kinds' trainer, from what ``train_from_recipe`` loaded (their
    ``build``): the recipe's rollout filters are passed on."""
    rollout_filters = [f.model_dump() for f in kwargs["recipe"].rollout_filters]
    return trainer_class(model, rollout_filters=rollout_filters, **kwargs)
