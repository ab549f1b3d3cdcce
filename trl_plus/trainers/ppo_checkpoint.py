"""Saving and resuming PPO: the critic lives in ``OUT/critic/``; ``kl_coef``, the schedule, the
reward sources' running normalisation and the rollout filters' counts in ``ppo_state.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import RecipeError
from .common import (
    restore_reward_norms,
    restore_rollout_counts,
    restore_schedule,
    reward_norms_state,
    rollout_counts_state,
    schedule_state,
)
from .ppo_engine import DEEPSPEED

CRITIC_DIR = "critic"
PPO_STATE = "ppo_state.json"  # kl_coef and the KL schedule's state, for resuming


class PPOCheckpointMixin:
    """``save_model`` and ``_load_from_checkpoint`` for ``PPOTrainer`` (mixed in before ``trl.RLOOTrainer``)."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        gathered = self.critic_engine.full_state_dict()  # every process: a collective under FSDP2 and ZeRO-3
        if self.args.should_save:
            extra = {"state_dict": gathered} if gathered is not None else {}
            self.critic.save_pretrained(os.path.join(output_dir, CRITIC_DIR), **extra)
            state = {"kl_coef": self.kl_coef, "kl_stats": self._kl_stats, "schedule": schedule_state(self.kl_schedule),
                     "reward_norms": reward_norms_state(self), "rollouts": rollout_counts_state(self)}
            Path(output_dir, PPO_STATE).write_text(json.dumps(state, indent=2))

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        self.critic_engine.save(output_dir)  # FSDP2, DeepSpeed: the critic and its optimizer, in the engine's format

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # One process, DDP and FSDP2 call this on --resume (DeepSpeed does not: its engine loads the policy).
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / CRITIC_DIR
        if not path.is_dir():
            raise RecipeError(f"checkpoint {resume_from_checkpoint} has no {CRITIC_DIR}/ folder: cannot restore the critic")
        if not self.critic_engine.own_optimizer:  # FSDP2 restores it from critic_engine/ below
            self.critic.load_saved(path)
        self._restore_ppo_state(resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        # Every engine calls this on --resume, after the models (and their engines) are prepared.
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        if self.critic_engine.own_optimizer:
            self.critic_engine.load(checkpoint)
        if self.critic_engine.kind == DEEPSPEED:  # it never called _load_from_checkpoint
            self._restore_ppo_state(checkpoint)

    def _restore_ppo_state(self, resume_from_checkpoint) -> None:
        state_file = Path(resume_from_checkpoint) / PPO_STATE
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            self.kl_coef = float(state["kl_coef"])
            self.beta = self.kl_coef or self.args.beta
            self._kl_stats = dict(state.get("kl_stats") or {})
            restore_schedule(self.kl_schedule, state.get("schedule"))
            restore_reward_norms(self, state.get("reward_norms"))
            restore_rollout_counts(self, state.get("rollouts"))
