"""Saving and resuming PPO: the critic lives in ``OUT/critic/``, ``kl_coef`` and the schedule in ``ppo_state.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import RecipeError
from .common import restore_schedule, schedule_state

CRITIC_DIR = "critic"
PPO_STATE = "ppo_state.json"  # kl_coef and the KL schedule's state, for resuming


class PPOCheckpointMixin:
    """``save_model`` and ``_load_from_checkpoint`` for ``PPOTrainer`` (mixed in before ``trl.RLOOTrainer``)."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            self.critic.save_pretrained(os.path.join(output_dir, CRITIC_DIR))
            state = {"kl_coef": self.kl_coef, "kl_stats": self._kl_stats, "schedule": schedule_state(self.kl_schedule)}
            Path(output_dir, PPO_STATE).write_text(json.dumps(state, indent=2))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / CRITIC_DIR
        if not path.is_dir():
            raise RecipeError(f"checkpoint {resume_from_checkpoint} has no {CRITIC_DIR}/ folder: cannot restore the critic")
        self.critic.load_saved(path)
        state_file = Path(resume_from_checkpoint) / PPO_STATE
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            self.kl_coef = float(state["kl_coef"])
            self.beta = self.kl_coef or self.args.beta
            self._kl_stats = dict(state.get("kl_stats") or {})
            restore_schedule(self.kl_schedule, state.get("schedule"))
