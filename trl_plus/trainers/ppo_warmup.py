"""Critic warm-up: value-only optimizer steps on fresh rollouts before the policy moves.

A critic that starts from scratch (a zero value head) gives GAE advantages that are mostly
its own noise, and the first policy updates follow that noise. With
``critic_warmup_steps: N`` the first ``N`` optimizer steps train the critic alone: rollouts
are generated and scored as usual (the policy does not change, so every one is fresh and
on-policy), the loss is the value loss only, and the policy's parameters do not move.
``critic_warmup_steps`` equal to ``max_steps`` is a value-only pre-training run whose
``critic/`` folder another run loads with ``critic_init: <that folder>``.

How "does not move" is kept (see :class:`CriticWarmup`): the policy loss leaves the total
loss (under several processes it stays in it times zero, so that DDP sees every policy
parameter take part in the graph and reduces their zero gradients); and just before each
warm-up optimizer step the policy's parameter groups get learning rate 0 and their gradients
are dropped, so neither Adam's update nor AdamW's decoupled weight decay (which moves a
parameter even at zero gradient) changes them, and the optimizer keeps no state for them yet.
The critic's groups take ``critic_warmup_learning_rate`` for those steps. Both are put back
right after the step, before the learning-rate scheduler steps, so every schedule (the
policy's and the critic's) counts warm-up steps like any other.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

METRIC = "critic_warmup"  # 1 in the rows logged during warm-up, 0 after (only when warm-up is on)


def warmup_steps(args) -> int:
    return int(getattr(args, "critic_warmup_steps", 0) or 0)


def in_warmup(trainer) -> bool:
    """Whether the optimizer step now being computed is a warm-up (value-only) step."""
    return trainer.model.training and trainer.state.global_step < warmup_steps(trainer.args)


def warmup_learning_rate(args) -> float:
    return args.critic_warmup_learning_rate or args.critic_learning_rate or args.learning_rate


def combine_losses(trainer, pg_loss: torch.Tensor, vf_loss: torch.Tensor) -> torch.Tensor:
    """PPO's loss, ``pg_loss + vf_coef * vf_loss``; during the critic warm-up the value loss
    alone (plus ``0 * pg_loss`` under several processes, so DDP sees every policy parameter used)."""
    value_part = trainer.args.vf_coef * vf_loss
    if not warmup_steps(trainer.args):
        return pg_loss + value_part
    warming = in_warmup(trainer)
    if trainer.model.training:
        trainer._metrics["train"][METRIC].append(float(warming))
    if not warming:
        return pg_loss + value_part
    if trainer.accelerator.num_processes > 1:
        return value_part + 0.0 * pg_loss
    return value_part


class CriticWarmup(TrainerCallback):
    """Around each warm-up optimizer step: policy groups at learning rate 0 with no gradient,
    critic groups at ``critic_warmup_learning_rate``; everything put back after the step.

    The critic's groups are every group of ``trainer.critic_optimizer`` when the trainer has
    one (a critic stepped by its own optimizer), else the groups of ``trainer.optimizer``
    that hold a critic parameter.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self._saved: list = []

    def _groups(self):
        trainer = self.trainer
        critic_ids = {id(p) for p in trainer.critic.parameters()}
        own = getattr(trainer, "critic_optimizer", None)
        for optimizer in (trainer.optimizer, own):
            if optimizer is None:
                continue
            for group in optimizer.param_groups:
                yield group, optimizer is own or any(id(p) in critic_ids for p in group["params"])

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step >= warmup_steps(args):
            return
        lr = warmup_learning_rate(args)
        self._saved = []
        for group, is_critic in self._groups():
            self._saved.append((group, group["lr"]))
            if is_critic:
                group["lr"] = lr
            else:
                group["lr"] = 0.0
                for p in group["params"]:
                    p.grad = None

    def on_optimizer_step(self, args, state, control, **kwargs):
        for group, lr in self._saved:
            group["lr"] = lr
        self._saved = []
