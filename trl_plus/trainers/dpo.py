"""``trl_plus.DPOTrainer``: TRL's DPO with a beta schedule, data filters and lifecycle hooks."""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import trl
from transformers import TrainerCallback

from .. import loading
from ..data.prepare import filter_token_ids, prepare_dataset
from ..data.report import write_filter_report
from ..data.rows import DataOptions
from .common import hooks_for, restore_schedule, schedule_state, tokenizer_of
from .compute import attach as count_compute
from .from_recipe import train_from_recipe  # the shared one, for every kind, under the name callers know

__all__ = ["DPOTrainer", "DPOConfig", "train_from_recipe"]

DPO_STATE = "dpo_state.json"  # beta and the KL schedule's state in a checkpoint, for resuming
_TEXT_COLUMNS = ("prompt", "chosen", "rejected")
_TOKEN_COLUMNS = {"prompt": "prompt_ids", "chosen": "chosen_ids", "rejected": "rejected_ids"}  # TRL's tokenised rows


@dataclass
class DPOConfig(trl.DPOConfig):
    """``trl.DPOConfig`` plus ``ref_logps_cache``, so that a recipe's ``dpo:`` section can set it."""

    ref_logps_cache: str | None = field(
        default=None,
        metadata={"help": "Folder of the reference log-prob cache (see `trl_plus.DPOTrainer`); None: no cache."},
    )


class _BetaSchedule(TrainerCallback):
    """Sets ``trainer.beta`` from the KL schedule before every optimizer step."""

    def __init__(self, trainer: DPOTrainer):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer._apply_schedule(state.global_step)


class DPOTrainer(trl.DPOTrainer):
    """Drop-in for ``trl.DPOTrainer``, plus keyword-only trl-plus components.

    :param rewards: reward-source specs or instances (used by pair building and
        reward-based filters; DPO's loss itself needs none).
    :param kl: a KL-schedule spec or instance; ``beta`` follows it at every step and is
        logged as ``beta``. Its ``stats["kl"]`` is an offline proxy: the mean absolute
        log-ratio to the reference of the chosen and rejected completions.
    :param filters: data-filter specs or instances, run on the preference data before
        tokenisation, except those that judge rows by token counts (``length``), which run
        on TRL's token ids after it tokenises; ``filter_report.json`` in the output dir says
        what each dropped.
    :param plugin_manager: a pluggy manager or ``trl_plus.Hooks``; a fresh default one
        if None.
    :param recipe: the recipe the run came from, passed to the lifecycle hooks.
    :param load_reports: ``{split name: report}``, what loading each split dropped
        (``trl_plus.data.splits.load_split``), counted in ``filter_report.json``.
    :param ref_logps_cache: a folder (default: ``args.ref_logps_cache``, else none). The
        reference log-probs are then precomputed (``precompute_ref_log_probs`` is turned
        on) and kept there, keyed by the reference's weights, the tokenizer, the tokenized
        rows (in any order) and the settings they depend on; a trainer whose key is
        already there loads them instead of running the reference. What each dataset
        did is in ``ref_logps_cache_info`` (``{name: {"key", "hit", "file"}}``).
    """

    def __init__(
        self, *args, rewards=None, kl=None, filters=None, plugin_manager=None, recipe=None, ref_logps_cache=None,
        load_reports=None, **kwargs
    ):
        args, kwargs = self._setup_ref_cache(args, kwargs, ref_logps_cache)
        self.hooks = hooks_for(plugin_manager)
        self._filter_specs = list(filters or [])
        self._filter_reports: dict = {}
        self._load_reports = dict(load_reports or {})
        self.recipe = recipe  # before the parent's __init__: dataset preparation reads its data options
        self._kl_stats: dict = {}
        components = self.hooks.components()
        self.kl_schedule = components.kl_schedule(kl)
        self.reward_mix = components.reward_mix(rewards)
        super().__init__(*args, **kwargs)
        if self.kl_schedule is not None:
            self._apply_schedule(0)
            self.add_callback(_BetaSchedule(self))
        if self.is_world_process_zero():
            write_filter_report(self.args.output_dir, self._filter_reports)
        count_compute(self)  # compute.json with every save
        self.hooks.trainer_created(trainer=self, recipe=recipe)

    # -- reference log-prob cache ----------------------------------------------------------
    def _setup_ref_cache(self, args: tuple, kwargs: dict, folder) -> tuple[tuple, dict]:
        """The parent's arguments, with precompute turned on in a copy of the config when
        the cache is in use (the caller's config is left as it was)."""
        self._ref_cache = None
        self.ref_logps_cache_info: dict = {}
        try:
            bound = inspect.signature(trl.DPOTrainer.__init__).bind(self, *args, **kwargs)
        except TypeError:  # let the parent report the bad call
            return args, kwargs
        config = bound.arguments.get("args")
        folder = folder if folder is not None else getattr(config, "ref_logps_cache", None)
        if not folder:
            return args, kwargs
        from .ref_cache import RefLogpsCache

        if config is None:  # the parent's default config, named as it would name it
            from trl.trainer.utils import get_config_model_id

            model = bound.arguments["model"]
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            config = DPOConfig(f"{name.split('/')[-1]}-DPO")
        if config.sync_ref_model:
            raise ValueError("ref_logps_cache= needs a fixed reference model; it cannot be used with sync_ref_model=True")
        if not config.precompute_ref_log_probs:
            config = copy.copy(config)
            config.precompute_ref_log_probs = True
        bound.arguments["args"] = config
        self._ref_cache = RefLogpsCache(folder)
        return bound.args[1:], bound.kwargs

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if self._ref_cache is None:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        from .ref_cache import precompute_with_cache

        return precompute_with_cache(self, self._ref_cache, dataset, name, batch_size, super()._precompute_ref_logps)

    # -- data ----------------------------------------------------------------------------
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """The row checks and the text filters, TRL's own preparation (which tokenises),
        then the filters that judge rows by token counts (the length filter), on TRL's ids."""
        chain = self.hooks.components(tokenizer=tokenizer_of(processing_class)).filter_chain(self._filter_specs)
        chain.defer_to_token_ids()
        dataset = prepare_dataset(
            dataset, _TEXT_COLUMNS, dataset_name, chain, options=DataOptions.of(self.recipe),
            processing_class=processing_class, reports=self._filter_reports,
            output_dir=args.output_dir, load_report=self._load_reports.get(dataset_name),
        )
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        return filter_token_ids(
            dataset, dataset_name, chain, _TOKEN_COLUMNS, text_columns=_TEXT_COLUMNS, reports=self._filter_reports,
            output_dir=args.output_dir,
        )

    # -- beta schedule -------------------------------------------------------------------
    def _measured_stats(self) -> dict:
        metrics = self._metrics["train"]
        chosen, rejected = metrics.get("rewards/chosen"), metrics.get("rewards/rejected")
        if chosen and rejected:
            c = sum(chosen) / len(chosen) / self.beta
            r = sum(rejected) / len(rejected) / self.beta
            self._kl_stats = {"kl": 0.5 * (abs(c) + abs(r)), "logratio/chosen": c, "logratio/rejected": r}
            for key in ("rewards/margins", "rewards/accuracies"):
                if metrics.get(key):
                    self._kl_stats[key] = sum(metrics[key]) / len(metrics[key])
        return self._kl_stats

    def _apply_schedule(self, step: int) -> None:
        self.beta = self.kl_schedule(step, self._measured_stats())

    # -- saving and resuming: beta and the schedule's state ------------------------------------
    state_file = DPO_STATE  # a subclass keeps its own state under its own name

    def _checkpoint_state(self) -> dict | None:
        """What every save keeps beside the model for a resume (None: no file)."""
        if self.kl_schedule is None:
            return None
        return {"beta": float(self.beta), "kl_stats": self._kl_stats, "schedule": schedule_state(self.kl_schedule)}

    def _restore_state(self, state: dict) -> None:
        """Put back what :meth:`_checkpoint_state` kept."""
        if self.kl_schedule is not None and "beta" in state:
            self.beta = float(state["beta"])
            self._kl_stats = dict(state.get("kl_stats") or {})
            restore_schedule(self.kl_schedule, state.get("schedule"))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        state = self._checkpoint_state() if self.args.should_save else None
        if state is not None:
            Path(output_dir or self.args.output_dir, self.state_file).write_text(json.dumps(state, indent=2))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / self.state_file
        if path.is_file():
            self._restore_state(json.loads(path.read_text()))

    # -- logging -------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        training = self.model.training and not any(k.startswith("eval_") for k in logs)
        if training:
            if self.kl_schedule is not None:
                self._measured_stats()  # TRL's log empties the metrics: read them while they are there
            logs["beta"] = float(self.beta)
            if "kl" in self._kl_stats:
                logs["kl_proxy"] = self._kl_stats["kl"]
        super().log(logs, start_time)
        if training:
            self.hooks.step_end(trainer=self, step=self.state.global_step, metrics=dict(logs))


def build_trainer(trainer_class, model, **kwargs):
    """The ``dpo`` kind's trainer, from what ``train_from_recipe`` loaded (its ``build``).

    The reference model is loaded here: TRL would re-load it by name, which fails offline.
    With LoRA and no ``model.ref_model`` named, TRL's reference is the policy with its
    adapters switched off.
    """
    recipe = kwargs["recipe"]
    ref_model = None
    if not kwargs["peft_config"] or recipe.model.ref_model:
        ref_model = loading.load_model(recipe.model, kwargs["plugin_manager"], "reference", recipe.model.ref_model)
    return trainer_class(model, ref_model, **kwargs)
