"""PPO's optimisation: the critic as a second parameter group, fresh minibatches per epoch, the loss."""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from . import ppo_math, ppo_warmup


class _ZeroCriticGrads(TrainerCallback):
    """The Trainer steps and zeroes only ``self.model``'s optimizer; after each of its steps this
    steps the critic's own optimizer (FSDP2) or zeroes the critic's gradients (one process, DDP)
    (``trainer``: the ``PPOTrainer`` this is a callback of)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.critic_engine.step()


class PPOLossMixin:
    """Optimizer, minibatching and loss for ``PPOTrainer`` (mixed in before ``trl.RLOOTrainer``)."""

    # -- optimisation: the critic is a second parameter group -------------------------------
    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.critic_engine.own_optimizer:  # FSDP2, DeepSpeed: the critic's optimizer is built with its engine
            return optimizer
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for group in self.critic_engine.param_groups(skip=present):
            optimizer.add_param_group(group)
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        self.critic_engine.build(num_training_steps)  # FSDP2, DeepSpeed: shard the critic, its optimizer and schedule
        return scheduler

    def _clip_grad_norm(self, model):
        norm = super()._clip_grad_norm(model)  # also unscales every group (critic included) under fp16
        self._metrics["train"]["value/grad_norm"].append(self.critic_engine.clip(self.args.max_grad_norm))
        return norm

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
        values = inputs.pop("values_for_loss", None)  # the rollout's critic forward, on-policy (ppo_critic)
        if values is None:
            values = self._values(inputs)
        vf_loss, vf_clipfrac = ppo_math.clipped_value_loss(
            values, inputs["old_values"], inputs["returns"], mask, self.args.cliprange_value
        )
        if torch.is_grad_enabled() and self.critic_engine.backward(self.args.vf_coef * vf_loss):
            vf_loss = vf_loss.detach()  # DeepSpeed: the critic's own engine took the value loss (backward, step)
        loss = ppo_warmup.combine_losses(self, pg_loss, vf_loss)  # pg + vf_coef * vf; value-only in the critic warm-up
        mode = "train" if self.model.training else "eval"
        if self.aux_loss_enabled:  # MoE router load balancing, weighted and logged as RLOO does
            loss = loss + self.router_aux_loss_coef * aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss.detach()).mean().item())

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
