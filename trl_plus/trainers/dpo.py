"""``trl_plus.DPOTrainer``: TRL's DPO with a beta schedule, data filters and lifecycle hooks."""

from __future__ import annotations

import time
import trl
from transformers import TrainerCallback
from trl import DPOConfig

from .common import FILTER_REPORT, check_text_columns, hooks_for, save_run, tokenizer_of, write_filter_report

__all__ = ["DPOTrainer", "DPOConfig", "train_from_recipe"]


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
        tokenisation; ``filter_report.json`` in the output dir says what each dropped.
    :param plugin_manager: a pluggy manager or ``trl_plus.Hooks``; a fresh default one
        if None.
    :param recipe: the recipe the run came from, passed to the lifecycle hooks.
    """

    def __init__(self, *args, rewards=None, kl=None, filters=None, plugin_manager=None, recipe=None, **kwargs):
        self.hooks = hooks_for(plugin_manager)
        self._filter_specs = list(filters or [])
        self._filter_reports: dict = {}
        self._kl_stats: dict = {}
        components = self.hooks.components()
        self.kl_schedule = components.kl_schedule(kl)
        self.reward_mix = components.reward_mix(rewards)
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        if self.kl_schedule is not None:
            self._apply_schedule(0)
            self.add_callback(_BetaSchedule(self))
        if self.is_world_process_zero():
            write_filter_report(self.args.output_dir, self._filter_reports)
        self.hooks.trainer_created(trainer=self, recipe=recipe)

    # -- data ----------------------------------------------------------------------------
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        from datasets import Dataset

        already_tokenized = "input_ids" in (getattr(dataset, "column_names", None) or [])
        if isinstance(dataset, Dataset) and not already_tokenized:
            check_text_columns(dataset, ("prompt", "chosen", "rejected"), dataset_name)
            chain = self.hooks.components(tokenizer=tokenizer_of(processing_class)).filter_chain(self._filter_specs)
            dataset = chain.apply_to_dataset(dataset)
            self._filter_reports[dataset_name] = chain.report()
            if len(dataset) == 0:
                from ..errors import DataError

                raise DataError(
                    f"the filters dropped every row of the {dataset_name} dataset; see {FILTER_REPORT}: "
                    f"{chain.report()['filters']}"
                )
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

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

    # -- logging -------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        training = self.model.training and not any(k.startswith("eval_") for k in logs)
        if training:
            logs["beta"] = float(self.beta)
            if "kl" in self._kl_stats:
                logs["kl_proxy"] = self._kl_stats["kl"]
        super().log(logs, start_time)
        if training:
            self.hooks.step_end(trainer=self, step=self.state.global_step, metrics=dict(logs))


def train_from_recipe(recipe, output_dir: str, hooks=None, resume_from_checkpoint=None) -> DPOTrainer:
    """Build everything a ``trainer: dpo`` recipe describes, train, and save into ``output_dir``."""
    from ..loading import load_model, load_split, load_tokenizer, peft_config, require_columns
    from ..recipe import build_trainer_config

    hooks = hooks_for(hooks)
    started = time.time()
    tokenizer = load_tokenizer(recipe.model)
    train = load_split(recipe.data.train, hooks, "data.train")
    require_columns(train, ["chosen", "rejected"], "data.train")
    evaluation = load_split(recipe.data.eval, hooks, "data.eval")
    model = load_model(recipe.model, hooks, "policy")
    peft = peft_config(recipe.model)
    # Load the reference ourselves: TRL would re-load it by name, which fails offline.
    ref_model = None if peft else load_model(recipe.model, hooks, "reference", recipe.model.ref_model)
    args = build_trainer_config(recipe.spec, output_dir)
    trainer = DPOTrainer(
        model,
        ref_model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft,
        rewards=[r.model_dump() for r in recipe.rewards] or None,
        kl=recipe.kl.model_dump() if recipe.kl else None,
        filters=[f.model_dump() for f in recipe.filters],
        plugin_manager=hooks,
        recipe=recipe,
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    save_run(trainer, output_dir, recipe, started)
    return trainer
