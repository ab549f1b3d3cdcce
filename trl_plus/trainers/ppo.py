"""``trl_plus.PPOTrainer``: PPO for language models on ``trl.RLOOTrainer``'s rollout machinery.

RLOO already generates (transformers or vLLM), scores, gathers across processes, and
replays each rollout batch over ``steps_per_generation`` micro-batches for
``num_iterations`` epochs. PPO adds what RLOO lacks:

- a learned value function (``ppo_critic.ValueModel``) with its own parameter group;
- per-token rewards: ``-kl_coef * kl_t`` on every completion token, the sequence score
  on the last one (Ziegler et al. 2019);
- GAE advantages and returns, whitened (Schulman et al. 2016; Huang et al. 2024);
- a token-level clipped surrogate and a clipped value loss (Schulman et al. 2017).

The arithmetic lives in ``ppo_math`` (pure tensors). The trainer is assembled from mixins,
one module each: ``ppo_rollout`` (rewards, values, GAE per rollout), ``ppo_loss`` (the
critic's parameter group, minibatches, the loss), ``ppo_critic`` (the value model),
``ppo_checkpoint`` (saving and resuming); ``ppo_setup`` checks what PPO refuses before
anything is built. This module holds the construction, the scoring and the logging.
"""

from __future__ import annotations

import math

import torch
import trl
from accelerate.utils import gather

from .. import loading
from ..data.prepare import prepare_dataset
from ..data.report import write_filter_report
from ..data.rows import DataOptions
from ..errors import RecipeError
from ..reward_checks import unscored_guard
from . import peft_support
from .common import as_text as _text
from .common import hooks_for, tokenizer_of
from .compute import attach as count_compute
from .from_recipe import train_from_recipe  # the shared one, for every kind, under the name callers know
from .ppo_checkpoint import PPOCheckpointMixin
from .ppo_config import PPOConfig
from .ppo_critic import PPOCriticMixin, load_critic
from .ppo_loss import PPOLossMixin, _ZeroCriticGrads
from .ppo_rollout import PPORolloutMixin
from .ppo_setup import (
    _as_ppo_config,
    _ensure_reference_loadable,
    refuse_schedule_without_reference,
    refuse_vision_language,
)
from .ppo_engine import check_critic_adapter, check_engine_env
from .ppo_vllm import refuse_unsupported_vllm
from .ppo_warmup import CriticWarmup

__all__ = ["PPOTrainer", "PPOConfig", "train_from_recipe"]


class _RewardMixFunc:
    """Stands in for RLOO's reward functions; the real scoring happens in ``_calculate_rewards``."""

    __name__ = "reward"

    def __call__(self, prompts, completions, **kwargs):  # pragma: no cover - never called
        raise RuntimeError("PPOTrainer scores rollouts itself")


class PPOTrainer(PPORolloutMixin, PPOLossMixin, PPOCriticMixin, PPOCheckpointMixin, trl.RLOOTrainer):
    """Drop-in for ``trl.RLOOTrainer`` that trains with PPO, plus keyword-only trl-plus components.

    :param reward_funcs: as for RLOO (callables or reward models); may be omitted when
        ``rewards`` is given.
    :param rewards: reward-source specs or instances, combined by ``Components.reward_mix``
        (weighted sum); each source's mean is logged as ``reward/<name>``.
    :param kl: a KL-schedule spec or instance; ``kl_coef`` follows it at every rollout
        (the adaptive controller is fed the measured KL, ``stats["kl"]``). Without one,
        ``args.beta`` is the constant coefficient.
    :param filters: data-filter specs or instances, run on the prompt dataset before training.
    :param rollout_filters: data-filter specs or instances, run on every scored rollout batch
        (columns ``prompt``, ``completion``, ``reward``, ``reward/<source>``); dropped samples
        get zero advantage and no loss. Counts go to the logs and ``filter_report.json``.
    :param plugin_manager: a pluggy manager or ``trl_plus.Hooks``; a fresh default one if None.
    :param recipe: the recipe the run came from, passed to the lifecycle hooks.
    :param critic: the value model: a ``ppo_critic.ValueModel``, a one-label sequence-classification
        model or a path; default from ``args.critic_init``.
    :param load_reports: ``{split name: report}``, what loading each split dropped
        (``trl_plus.data.splits.load_split``), counted in ``filter_report.json``.
    """

    _tag_names = ["trl", "trl-plus", "ppo"]

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: PPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
        *,
        rewards=None,
        kl=None,
        filters=None,
        rollout_filters=None,
        plugin_manager=None,
        recipe=None,
        critic=None,
        load_reports=None,
    ):
        args = _as_ppo_config(args, model)
        check_engine_env()
        refuse_vision_language(processing_class)
        refuse_unsupported_vllm(args)
        self.hooks = hooks_for(plugin_manager)
        self.recipe = recipe
        tokenizer = tokenizer_of(processing_class) if processing_class is not None else None
        components = self.hooks.components(tokenizer=tokenizer)
        self.kl_schedule = components.kl_schedule(kl)
        if self.kl_schedule is not None:
            refuse_schedule_without_reference(args)
            self.kl_schedule.allow_zero = True  # PPO: kl_coef 0 is no KL penalty
        self.reward_mix = components.reward_mix(rewards)
        if self.reward_mix is None and not reward_funcs:
            raise RecipeError("PPOTrainer needs rewards= (reward sources) or reward_funcs=", "rewards")
        if self.reward_mix is not None:
            if reward_funcs:
                raise RecipeError("give rewards= or reward_funcs=, not both", "rewards")
            reward_funcs = [_RewardMixFunc()]
        self._rollout_chain = components.filter_chain(rollout_filters, "rollout_filters")
        self._filter_reports: dict = {}
        train_dataset = prepare_dataset(
            train_dataset, ("prompt",), "train", components.filter_chain(filters), options=DataOptions.of(recipe),
            processing_class=processing_class, reports=self._filter_reports, output_dir=args.output_dir,
            load_report=(load_reports or {}).get("train"),
        )
        self._rollout_dropped = 0
        self._rollout_unscored = 0
        # What the KL schedule is given: the last rollout's measurements, and the cumulative sample count.
        self._kl_stats: dict = {"samples": 0}
        self._capture: list | None = None
        self._reference_checked = False
        self._scored: dict | None = None
        self.kl_coef = float(args.beta)

        # RLOO loads the reference (beta > 0) and colocated vLLM from the policy's folder: an in-memory policy needs one.
        if not isinstance(model, str) and (args.beta != 0 or (args.use_vllm and args.vllm_mode == "colocate")):
            _ensure_reference_loadable(model, args, peft_config)

        shared_critic = peft_support.wants_shared_critic(critic, args.critic_init, model, peft_config)
        check_critic_adapter(args, shared_critic)
        critic_model = None if shared_critic else self._build_critic(critic, args, model, tokenizer, rewards)

        super().__init__(
            model,
            reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        refuse_vision_language(processing_class, self)
        if shared_critic:  # LoRA: a value head on the policy's own base, no second backbone
            critic_model = peft_support.shared_critic(self.model, self._tokenizer.pad_token_id, self.args, critic)
        self._attach_critic(critic_model)
        self.add_callback(_ZeroCriticGrads(self))
        self.add_callback(CriticWarmup(self))
        if self.kl_schedule is not None:
            self._apply_schedule()
        if self.is_world_process_zero():
            self._write_filter_report()
        count_compute(self)  # compute.json with every save; the rollouts' sampled tokens counted
        self.hooks.trainer_created(trainer=self, recipe=recipe)

    # -- KL schedule -------------------------------------------------------------------------
    def _apply_schedule(self) -> None:
        self.kl_coef = self.kl_schedule(self.state.global_step, dict(self._kl_stats))
        # RLOO computes reference log-probs only while its beta != 0: a schedule at 0 still measures the KL.
        self.beta = self.kl_coef or self.args.beta

    # -- scoring -------------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        device = self.accelerator.device
        eos_ids = set(self.eos_token_ids)
        has_eos = [bool(ids) and ids[-1] in eos_ids for ids in completion_ids_list]
        text_prompts = [_text(p) for p in prompts]
        text_completions = [_text(c) for c in completions]
        if self.reward_mix is None:
            gathered = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            local = gathered[self._process_slice(len(prompts))]
            weights = self.reward_weights.to(local.device)
            totals = (local * weights).nansum(dim=1)
            totals[torch.isnan(local).all(dim=1)] = torch.nan
            names = self.reward_func_names
            per_source = {names[i]: local[:, i] for i in range(local.size(1))}
        else:
            columns = {k: [x[k] for x in inputs] for k in inputs[0] if k not in ("prompt", "completion", "images", "image")}
            scores = self.reward_mix.score(text_prompts, text_completions, **columns)
            totals = _to_tensor(scores.total, device)
            per_source = {name: _to_tensor(values, device) for name, values in scores.per_source.items()}
            gathered = gather(totals.unsqueeze(1))
        unscored_guard(self).check(gathered, training=self.model.training)
        self._scored = {
            "prompts": text_prompts,
            "completions": text_completions,
            "reward": totals.to(device),
            "per_source": {k: v.to(device) for k, v in per_source.items()},
            "has_eos": torch.tensor(has_eos, dtype=torch.bool, device=device),
        }
        return gathered

    # -- logging -------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        training = not any(k.startswith("eval_") for k in logs)
        logs["kl_coef"] = float(self.kl_coef)
        super().log(logs, start_time)
        if self.is_world_process_zero() and self._rollout_chain:  # the prompt filters' part was written at start
            self._write_filter_report()
        if training:
            self.hooks.step_end(trainer=self, step=self.state.global_step, metrics=dict(logs))

    def _write_filter_report(self) -> None:
        write_filter_report(self.args.output_dir, self._filter_reports, rollouts=self._rollout_chain)


def _to_tensor(values, device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.float().to(device)
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32, device=device)


def check_recipe(recipe) -> None:
    """What the ``ppo`` kind refuses before any model loads (its ``check``): no reward source."""
    if not recipe.rewards:
        raise RecipeError("trainer 'ppo' needs at least one reward source", "rewards")
    check_engine_env()  # under accelerate launch: an engine PPO does not run under, before any model loads


def build_trainer(trainer_class, model, **kwargs):
    """The ``ppo`` kind's trainer, from what ``train_from_recipe`` loaded (its ``build``):
    the critic named by ``critic_init`` (a model, unless ``policy`` or ``reward``) is loaded
    here, and the recipe's rollout filters are passed on."""
    recipe, args = kwargs["recipe"], kwargs["args"]
    critic = None
    if args.critic_init not in ("policy", "reward"):
        critic = load_critic(args.critic_init, loading.model_init_kwargs(recipe.model), kwargs["plugin_manager"])
    rollout_filters = [f.model_dump() for f in recipe.rollout_filters]
    return trainer_class(model, rollout_filters=rollout_filters, critic=critic, **kwargs)
