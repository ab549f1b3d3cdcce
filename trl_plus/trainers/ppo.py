"""``trl_plus.PPOTrainer``: PPO for language models on ``trl.RLOOTrainer``'s rollout machinery.

RLOO already generates (transformers or vLLM), scores, gathers across processes, and
replays each rollout batch over ``steps_per_generation`` micro-batches for
``num_iterations`` epochs. PPO adds what RLOO lacks:

- a learned value function (``ppo_critic.ValueModel``) with its own parameter group;
- per-token rewards: ``-kl_coef * kl_t`` on every completion token, the sequence score
  on the last one (Ziegler et al. 2019);
- GAE advantages and returns, whitened (Schulman et al. 2016; Huang et al. 2024);
- a token-level clipped surrogate and a clipped value loss (Schulman et al. 2017).

The arithmetic lives in ``ppo_math`` (pure tensors); this module wires it into the trainer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import trl
from accelerate.utils import gather, gather_object
from transformers import TrainerCallback

from ..data_checks import DataOptions, prepare_dataset
from ..errors import RecipeError
from . import ppo_math
from .common import hooks_for, save_run, tokenizer_of, write_filter_report
from .ppo_config import PPOConfig
from .ppo_critic import ValueModel, critic_from_policy, load_critic, reward_model_of

__all__ = ["PPOTrainer", "PPOConfig", "train_from_recipe"]

CRITIC_DIR = "critic"
PPO_STATE = "ppo_state.json"  # kl_coef and the KL schedule's state, for resuming


class _ZeroCriticGrads(TrainerCallback):
    """The Trainer zeroes only ``self.model``'s gradients after each optimizer step; this zeroes the critic's."""

    def __init__(self, trainer: PPOTrainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.critic.zero_grad(set_to_none=True)


def _text(value) -> str:
    """A prompt or completion as text (conversational messages joined by their content)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text(m.get("content", "")) if isinstance(m, dict) else _text(m) for m in value)
    if isinstance(value, dict):
        return _text(value.get("content", ""))
    return str(value)


class _RewardMixFunc:
    """Stands in for RLOO's reward functions; the real scoring happens in ``_calculate_rewards``."""

    __name__ = "reward"

    def __call__(self, prompts, completions, **kwargs):  # pragma: no cover - never called
        raise RuntimeError("PPOTrainer scores rollouts itself")


class PPOTrainer(trl.RLOOTrainer):
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
    :param critic: the value model: a sequence-classification model or a path; default from
        ``args.critic_init``.
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
    ):
        args = _as_ppo_config(args, model)
        self.hooks = hooks_for(plugin_manager)
        self.recipe = recipe
        tokenizer = tokenizer_of(processing_class) if processing_class is not None else None
        components = self.hooks.components(tokenizer=tokenizer)
        self.kl_schedule = components.kl_schedule(kl)
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
        )
        self._rollout_dropped = 0
        self._rollout_unscored = 0
        self._kl_stats: dict = {}
        self._capture: list | None = None
        self._scored: dict | None = None
        self.kl_coef = float(args.beta)

        if not isinstance(model, str):
            _ensure_reference_loadable(model, args, peft_config)

        critic_model = self._build_critic(critic, args, model, tokenizer, rewards)

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
        if critic_model is None:  # the policy was given by name: RLOO loaded it
            critic_model = critic_from_policy(self.model, self._tokenizer.pad_token_id)
        critic_vocab = getattr(critic_model.config.get_text_config(), "vocab_size", None)
        if critic_vocab is not None and critic_vocab < len(self._tokenizer):
            raise RecipeError(
                f"the critic's vocabulary ({critic_vocab} tokens) is smaller than the policy tokenizer's "
                f"({len(self._tokenizer)}): the critic reads the policy's token ids, so it must share its tokenizer",
                "ppo.critic_init",
            )
        critic_model.config.pad_token_id = self._tokenizer.pad_token_id
        if self.args.disable_dropout:
            from trl.trainer.utils import disable_dropout_in_model

            disable_dropout_in_model(critic_model)
        self.critic = critic_model
        self.critic.train()
        # Prepared (DDP-wrapped under several processes): always call the critic through this.
        self.critic_module = self.accelerator.prepare_model(ValueModel(self.critic))
        self.add_callback(_ZeroCriticGrads(self))
        if self.kl_schedule is not None:
            self._apply_schedule()
        if self.is_world_process_zero():
            self._write_filter_report()
        self.hooks.trainer_created(trainer=self, recipe=recipe)

    # -- construction helpers --------------------------------------------------------------
    def _build_critic(self, critic, args, model, tokenizer, rewards):
        pad_id = tokenizer.pad_token_id if tokenizer is not None else None
        if critic is not None and not isinstance(critic, str):
            return critic
        init = critic or args.critic_init
        if init == "policy":
            return None if isinstance(model, str) else critic_from_policy(model, pad_id)
        if init == "reward":
            path = reward_model_of(rewards)
            if path is None:
                raise RecipeError(
                    "critic_init 'reward' needs a 'reward_model' reward source with a model path in rewards=; "
                    "or pass critic= (a model or path)",
                    "ppo.critic_init",
                )
            init = path
        return load_critic(init, hooks=self.hooks)

    # -- optimisation: the critic is a second parameter group -------------------------------
    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [(n, p) for n, p in self.critic.named_parameters() if p.requires_grad and id(p) not in present]
        if params:
            decay = set(self.get_decay_parameter_names(self.critic))
            lr = self.args.critic_learning_rate or self.args.learning_rate
            for wanted, weight_decay in ((True, self.args.weight_decay), (False, 0.0)):
                group = [p for n, p in params if (n in decay) == wanted]
                if group:
                    optimizer.add_param_group({"params": group, "weight_decay": weight_decay, "lr": lr})
        return optimizer

    def _clip_grad_norm(self, model):
        norm = super()._clip_grad_norm(model)  # also unscales every group (critic included) under fp16
        critic_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.critic.parameters() if p.grad is not None], self.args.max_grad_norm
        )
        self._metrics["train"]["value/grad_norm"].append(float(critic_norm))
        return norm

    # -- KL schedule -------------------------------------------------------------------------
    def _apply_schedule(self) -> None:
        self.kl_coef = self.kl_schedule(self.state.global_step, dict(self._kl_stats))
        # RLOO only computes reference log-probs while beta != 0; the schedule keeps it > 0.
        self.beta = self.kl_coef

    # -- rollouts ------------------------------------------------------------------------------
    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._capture is not None and not torch.is_grad_enabled():
            # RLOO computes per-token old (policy) then reference log-probs but keeps only sums: keep them.
            self._capture.append(out[0])
        return out

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
        self._scored = {
            "prompts": text_prompts,
            "completions": text_completions,
            "reward": totals.to(device),
            "per_source": {k: v.to(device) for k, v in per_source.items()},
            "has_eos": torch.tensor(has_eos, dtype=torch.bool, device=device),
        }
        return gathered

    def _process_slice(self, n_local: int) -> slice:
        start = self.accelerator.process_index * n_local
        return slice(start, start + n_local)

    def _reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(t, reduction="sum") if self.accelerator.num_processes > 1 else t

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        if mode == "train" and self.kl_schedule is not None:
            self._apply_schedule()
        self._capture = []
        try:
            out = super()._generate_and_score_completions(inputs)
            captured = self._capture
        finally:
            self._capture = None
        if len(captured) < 2:
            raise RuntimeError("PPOTrainer: the reference log-probs were not computed (is beta > 0?)")
        old_logps, ref_logps = captured[0].detach(), captured[1].detach()
        scored, self._scored = self._scored, None
        metrics = self._metrics[mode]
        for key in [k for k in metrics if k.startswith("rewards/") or k == "kl"]:
            # RLOO's per-function and per-token KL entries: replaced by ours below.
            if metrics[key]:
                metrics[key].pop()
            if not metrics[key]:
                del metrics[key]

        args = self.args
        device = old_logps.device
        completion_mask = out["completion_mask"].to(old_logps.dtype)
        score = scored["reward"].to(old_logps.dtype)
        if args.missing_eos_penalty is not None:
            score = torch.where(scored["has_eos"], score, score - args.missing_eos_penalty)

        rewards_cols = {"reward": _to_list(score)}
        rewards_cols.update({f"reward/{k}": _to_list(v) for k, v in scored["per_source"].items()})
        self.hooks.rollout_scored(
            trainer=self,
            step=self.state.global_step,
            prompts=scored["prompts"],
            completions=scored["completions"],
            rewards=rewards_cols,
        )

        keep = ~torch.isnan(score)
        n_unscored = int(self._reduce_sum((~keep).sum().float()).item())
        if self._rollout_chain:
            keep = keep & self._rollout_mask(scored, rewards_cols, device)
        n_dropped = int(self._reduce_sum((~keep).sum().float()).item())
        if mode == "train":
            self._rollout_unscored += n_unscored
            self._rollout_dropped += n_dropped
        loss_mask = completion_mask * keep.unsqueeze(1).to(completion_mask.dtype)

        # Per-token rewards with the KL penalty inside (measured on every sample, dropped or not).
        kl = ppo_math.kl_per_token(old_logps, ref_logps, args.kl_estimator) * completion_mask
        rewards = ppo_math.per_token_rewards(torch.nan_to_num(score, nan=0.0), kl, loss_mask, self.kl_coef)
        if args.whiten_rewards:
            rewards = ppo_math.masked_whiten(rewards, loss_mask, shift_mean=False, reduce=self._reduce_sum)

        with torch.no_grad():
            values = self._values(out)
        values = values * loss_mask
        advantages, returns = ppo_math.gae(rewards, values, loss_mask, args.gamma, args.lam)
        if args.normalize_advantages:
            advantages = ppo_math.masked_whiten(advantages, loss_mask, reduce=self._reduce_sum)

        # Logs: the measured KL is the mean per-sequence sum (what the adaptive controller targets).
        seq_stats = self._reduce_sum(
            torch.stack([kl.sum(), completion_mask.sum(), torch.tensor(float(kl.size(0)), device=device)])
        )
        kl_seq = (seq_stats[0] / seq_stats[2].clamp(min=1)).item()
        metrics["kl"].append(kl_seq)
        metrics["kl_per_token"].append((seq_stats[0] / seq_stats[1].clamp(min=1)).item())
        for name, values_src in scored["per_source"].items():
            stats = self._reduce_sum(
                torch.stack([torch.nansum(values_src), (~torch.isnan(values_src)).sum().float()]).to(device)
            )
            metrics[f"reward/{name}"].append((stats[0] / stats[1]).item() if stats[1] > 0 else float("nan"))
        if args.missing_eos_penalty is not None:
            metrics["reward/with_eos_penalty"].append(float(torch.nanmean(gather(score)).item()))
        metrics["value/explained_variance"].append(
            ppo_math.explained_variance(values, returns, loss_mask, self._reduce_sum)
        )
        metrics["value/mean"].append(float(ppo_math.masked_mean(values, loss_mask).item()))
        metrics["returns/mean"].append(float(ppo_math.masked_mean(returns, loss_mask).item()))
        metrics["rollouts/dropped"].append(float(n_dropped))
        if mode == "train":
            metrics["rollouts/dropped_total"] = [float(self._rollout_dropped)]
            metrics["rollouts/unscored_total"] = [float(self._rollout_unscored)]
            for count in self._rollout_chain.counts:
                metrics[f"rollouts/dropped_total/{count.name}"] = [float(count.dropped)]
            self._kl_stats = {
                "kl": kl_seq,
                "kl_per_token": metrics["kl_per_token"][-1],
                "reward": float(torch.nanmean(gather(scored["reward"])).item()),
            }

        out["advantages"] = advantages.detach()
        out["returns"] = returns.detach()
        out["old_values"] = values.detach()
        out["old_per_token_logps"] = old_logps
        out["loss_mask"] = loss_mask
        return out

    def _rollout_mask(self, scored, rewards_cols, device) -> torch.Tensor:
        """Run the rollout filters on the whole (all-process) batch, so every rank decides alike."""
        batch = {
            "prompt": gather_object(list(scored["prompts"])),
            "completion": gather_object(list(scored["completions"])),
        }
        for key, values in rewards_cols.items():
            batch[key] = gather_object(list(values))
        keep = self._rollout_chain.mask(batch)
        n_local = len(scored["prompts"])
        return torch.tensor(keep[self._process_slice(n_local)], dtype=torch.bool, device=device)

    def _values(self, inputs) -> torch.Tensor:
        """The critic's value of each completion token's state (the position that predicts it)."""
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        with self.accelerator.autocast():
            values = self.critic_module(input_ids, attention_mask)
        start = prompt_ids.size(1) - 1
        return values[:, start : start + completion_ids.size(1)].float()

    def _prepare_inputs(self, generation_batch):
        # RLOO splits a rollout into minibatches once and replays the same split every epoch;
        # PPO draws fresh minibatches each epoch.
        spg = self.args.steps_per_generation
        if self.model.training and self.num_iterations > 1 and spg > 1 and self._buffered_inputs is not None:
            new_epoch = self._step % spg == 0 and self._step % (spg * self.num_iterations) != 0
            if new_epoch:
                self._reshuffle_minibatches()
        return super()._prepare_inputs(generation_batch)

    def _reshuffle_minibatches(self) -> None:
        from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

        batches = self._buffered_inputs
        if not all(v is None or isinstance(v, torch.Tensor) for b in batches for v in b.values()):
            return  # multimodal extras (lists): keep RLOO's split
        merged = {}
        for key, first in batches[0].items():
            if first is None or first.ndim == 0:
                merged[key] = first
            else:
                merged[key] = torch.cat([b[key] for b in batches])
        self._buffered_inputs = split_tensor_dict(shuffle_sequence_dict(merged), len(batches))

    # -- loss ----------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logits_to_keep = completion_ids.size(1)
        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
        )
        mask = inputs["loss_mask"]
        pg_loss, pg_clipfrac, approx_kl = ppo_math.clipped_policy_loss(
            per_token_logps,
            inputs["old_per_token_logps"],
            inputs["advantages"],
            mask,
            self.epsilon_low,
            self.epsilon_high,
        )
        values = self._values(inputs)
        vf_loss, vf_clipfrac = ppo_math.clipped_value_loss(
            values, inputs["old_values"], inputs["returns"], mask, self.args.cliprange_value
        )
        loss = pg_loss + self.args.vf_coef * vf_loss
        mode = "train" if self.model.training else "eval"
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss

        metrics = self._metrics[mode]
        cmask = completion_mask.to(entropies.dtype)
        local = torch.stack(
            [
                (entropies.detach() * cmask).sum(),
                cmask.sum(),
                pg_loss.detach(),
                vf_loss.detach(),
                pg_clipfrac,
                vf_clipfrac.to(pg_clipfrac.dtype),
                approx_kl,
                torch.ones((), device=cmask.device),
            ]
        ).float()
        total = self._reduce_sum(local)
        n = total[7]
        metrics["entropy"].append((total[0] / total[1].clamp(min=1)).item())
        metrics["loss/policy"].append((total[2] / n).item())
        metrics["loss/value"].append((total[3] / n).item())
        metrics["clip_ratio/policy"].append((total[4] / n).item())
        metrics["clip_ratio/value"].append((total[5] / n).item())
        metrics["approx_kl"].append((total[6] / n).item())
        return loss

    # -- logging -------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        training = not any(k.startswith("eval_") for k in logs)
        logs["kl_coef"] = float(self.kl_coef)
        super().log(logs, start_time)
        if self.is_world_process_zero() and (self._rollout_chain or self._filter_reports):
            self._write_filter_report()
        if training:
            self.hooks.step_end(trainer=self, step=self.state.global_step, metrics=dict(logs))

    def _write_filter_report(self) -> None:
        reports = dict(self._filter_reports)
        if self._rollout_chain:
            reports["rollouts"] = self._rollout_chain.report()
        write_filter_report(self.args.output_dir, reports)

    # -- saving and resuming: the critic lives in OUT/critic/ -----------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            self.critic.save_pretrained(os.path.join(output_dir, CRITIC_DIR))
            state = {"kl_coef": self.kl_coef, "kl_stats": self._kl_stats, "schedule": _schedule_state(self.kl_schedule)}
            Path(output_dir, PPO_STATE).write_text(json.dumps(state, indent=2))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / CRITIC_DIR
        if not path.is_dir():
            raise RecipeError(f"checkpoint {resume_from_checkpoint} has no {CRITIC_DIR}/ folder: cannot restore the critic")
        from transformers import AutoModelForSequenceClassification

        saved = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=self.critic.dtype)
        self.critic.load_state_dict(saved.state_dict())
        state_file = Path(resume_from_checkpoint) / PPO_STATE
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            self.kl_coef = self.beta = float(state["kl_coef"])
            self._kl_stats = dict(state.get("kl_stats") or {})
            if state.get("schedule") and self.kl_schedule is not None:
                # Plain attributes of a stateful schedule (the adaptive controller's value and last step).
                vars(self.kl_schedule.fn).update(state["schedule"])


def _schedule_state(schedule) -> dict | None:
    """A schedule's plain attributes, if all are JSON values (so a resumed run continues it)."""
    fn = getattr(schedule, "fn", None)
    attrs = getattr(fn, "__dict__", None)
    if not attrs:
        return None
    try:
        return json.loads(json.dumps(attrs, allow_nan=False))
    except (TypeError, ValueError):
        return None


def _to_tensor(values, device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.float().to(device)
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32, device=device)


def _to_list(t: torch.Tensor) -> list:
    return [None if math.isnan(v) else v for v in t.float().cpu().tolist()]


def _as_ppo_config(args, model) -> PPOConfig:
    if isinstance(args, PPOConfig):
        return args
    if args is None:
        name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
        return PPOConfig(output_dir=f"{Path(name).name}-PPO")
    if isinstance(args, trl.RLOOConfig):
        # Re-derive the generation batch from steps_per_generation, as RLOOConfig did.
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
        values["generation_batch_size"] = None
        return PPOConfig(**values)
    raise TypeError(f"args must be a trl_plus.PPOConfig (or trl.RLOOConfig), got {type(args).__name__}")


def _ensure_reference_loadable(model, args, peft_config) -> None:
    """RLOO rebuilds the reference from ``model.config._name_or_path``; an in-memory policy has none."""
    from accelerate.utils import is_peft_model

    if peft_config is not None or is_peft_model(model):
        return  # the reference is the adapter-disabled base: no second copy
    name = getattr(model.config, "_name_or_path", "") or ""
    if Path(name).is_dir():
        return
    if name and not Path(name).is_absolute() and not name.startswith("."):
        return  # a hub id: RLOO loads the reference from it, as the policy was
    folder = tempfile.mkdtemp(prefix="trl-plus-ppo-ref-")
    model.save_pretrained(folder)
    model.config._name_or_path = folder


def train_from_recipe(recipe, output_dir: str, hooks=None, resume_from_checkpoint=None) -> PPOTrainer:
    """Build everything a ``trainer: ppo`` recipe describes, train, and save into ``output_dir``."""
    from ..loading import load_model, load_split, load_tokenizer, model_init_kwargs, peft_config, require_columns
    from ..recipe import build_trainer_config

    hooks = hooks_for(hooks)
    started = time.time()
    tokenizer = load_tokenizer(recipe.model)
    train = load_split(recipe.data.train, hooks, "data.train", recipe.data.on_error)
    require_columns(train, ["prompt"], "data.train")
    evaluation = load_split(recipe.data.eval, hooks, "data.eval", recipe.data.on_error)
    if evaluation is not None:
        require_columns(evaluation, ["prompt"], "data.eval")
    if not recipe.rewards:
        raise RecipeError("trainer 'ppo' needs at least one reward source", "rewards")
    model = load_model(recipe.model, hooks, "policy")
    peft = peft_config(recipe.model)
    args = build_trainer_config(recipe.spec, output_dir)
    rewards = [r.model_dump() for r in recipe.rewards]
    critic = None
    if args.critic_init not in ("policy", "reward"):
        critic = load_critic(args.critic_init, model_init_kwargs(recipe.model), hooks)
    trainer = PPOTrainer(
        model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft,
        rewards=rewards,
        kl=recipe.kl.model_dump() if recipe.kl else None,
        filters=[f.model_dump() for f in recipe.filters],
        rollout_filters=[f.model_dump() for f in recipe.rollout_filters],
        plugin_manager=hooks,
        recipe=recipe,
        critic=critic,
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    save_run(trainer, output_dir, recipe, started)
    return trainer
