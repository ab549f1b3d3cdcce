"""Saving and resuming PPO: the critic lives in ``OUT/critic/``; ``kl_coef``, the schedule, the
reward sources' running normalisation and the rollout filters' counts in ``ppo_state.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import RecipeError
from .common import restore_schedule, schedule_state
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
                     # each normalised reward source's running statistics, by the label it logs under
                     "reward_norms": {s.label: s.norm.state() for s in self._normalised_sources()},
                     "rollouts": {"dropped": self._rollout_dropped, "unscored": self._rollout_unscored,
                                  **self._rollout_chain.counts_state()}}
            Path(output_dir, PPO_STATE).write_text(json.dumps(state, indent=2))

    # Under DDP every rank normalises and filters its own rollouts; the state saved is the
    # main process's, and a resumed run starts every rank from it.
    def _normalised_sources(self) -> list:
        sources = self.reward_mix.sources if self.reward_mix is not None else []
        return [s for s in sources if s.norm is not None]

    def _restore_counts(self, state: dict) -> None:
        norms = state.get("reward_norms") or {}
        for source in self._normalised_sources():
            if norms.get(source.label):
                source.norm.load_state(norms[source.label])
        rollouts = state.get("rollouts")
        if rollouts:
            self._rollout_dropped = int(rollouts["dropped"])
            self._rollout_unscored = int(rollouts.get("unscored", 0))
            self._rollout_chain.restore_counts(rollouts)

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
            self._restore_counts(state)
