"""What a pipeline recipe asks for, as pure functions of its parsed config and the table of
trainer kinds: which policy runs its sweep trains, which checkpoints each run leaves, and
which points the eval stage evaluates.

Nothing here runs a step; the stages, the eval stage and the report all read the same
answers from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .arms import stage_of
from .config import STAGE_KINDS  # which trainer kind each policy stage trains (PPO-GT: PPO on the gold reward)
from .layout import DONE

# The policy stage that optimises the learned reward model (its runs read reward/).
ON_REWARD_MODEL = "ppo"


@dataclass
class PolicyRun:
    method: str  # ppo | ppo_gt | dpo, or an arm: the name of its trainer kind
    strength: float  # beta (DPO), kl_coef or KL target (PPO), an arm's kl_field
    seed: int
    strength_key: str  # beta | kl_coef | kl_target | an arm's kl_field
    # An arm whose kind consumes prompts: it trains on the learned reward model, as ppo does.
    scored_by_reward_model: bool = False

    @property
    def name(self) -> str:
        return f"{self.strength_key}{self.strength:g}-seed{self.seed}"

    @property
    def rel(self) -> str:
        return f"{self.method}/{self.name}"

    @property
    def label(self) -> str:
        return f"{self.method} {self.strength_key}={self.strength:g} seed={self.seed}"

    @property
    def trainer(self) -> str:
        """The trainer kind the run trains with (``trainer:`` of its recipe)."""
        return STAGE_KINDS.get(self.method, self.method)

    @property
    def on_reward_model(self) -> bool:
        """Whether the run optimises the learned reward model (else the gold reward, or the pairs)."""
        return self.method == ON_REWARD_MODEL or self.scored_by_reward_model

    @property
    def marker(self) -> dict:
        """What the run's ``done.json`` records of it."""
        return {"method": self.method, "strength": self.strength, "seed": self.seed, "strength_key": self.strength_key}


def trainer_kind(method: str, kinds: Mapping):
    """The :class:`~trl_plus.protocols.TrainerKind` a policy stage trains with (an arm: the
    kind of its name)."""
    return kinds[STAGE_KINDS.get(method, method)]


def sweep(section, kind) -> tuple[list[float], str]:
    """The strengths a policy stage sweeps and their key: an arm of a registered trainer
    kind its ``<kl_field>s``; of the pipeline's own stages, a trainer that consumes pairs
    sweeps its ``betas``, one that consumes prompts its KL targets (the adaptive
    controller) or else its fixed ``kl_coefs``."""
    if getattr(section, "kl_field", None):  # an ``arms.ArmStage``
        return section.sweep_values, section.kl_field
    if kind.consumes == "pairs":
        return section.betas, "beta"
    if section.kl_targets:
        return section.kl_targets, "kl_target"
    return section.kl_coefs or [0.05], "kl_coef"


def planned_runs(config, kinds: Mapping) -> list[PolicyRun]:
    """Every policy run of the recipe's sweep: each method (arm) x strength x seed, in that order.

    :param kinds: ``Hooks.trainer_kinds``.
    """
    runs = []
    for method in config.methods:
        kind = trainer_kind(method, kinds)
        values, key = sweep(stage_of(config, method), kind)
        scored = method not in STAGE_KINDS and kind.consumes == "prompts"
        for value in values:
            for seed in config.stages.seeds:
                runs.append(PolicyRun(method, float(value), seed, key, scored))
    return runs


def upstream_of(run: PolicyRun) -> tuple[str, str]:
    """The steps a policy run is made from (their fingerprints enter its own)."""
    return ("pairs", "reward" if run.on_reward_model else "sft")


def is_checkpoint(folder: Path) -> bool:
    """A saved model: full weights (``config.json``) or a LoRA adapter (``adapter_config.json``,
    loaded on its base model by the evaluation harness)."""
    return (folder / "config.json").exists() or (folder / "adapter_config.json").exists()


def checkpoints_of(folder: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every saved checkpoint of a run, the final model included."""
    found = {}
    for ckpt in folder.glob("checkpoint-*"):
        if ckpt.name.split("-")[-1].isdigit() and is_checkpoint(ckpt):
            found[int(ckpt.name.split("-")[-1])] = ckpt
    marker = folder / DONE
    if marker.exists() and is_checkpoint(folder):
        step = json.loads(marker.read_text()).get("global_step")
        if step is not None and step not in found:
            found[int(step)] = folder
    return sorted(found.items())


def planned_points(path: Callable[..., Path], runs: list[PolicyRun]) -> list[dict]:
    """Every (run, checkpoint) to evaluate, the SFT reference first.

    :param path: the run folder's ``path(*parts)``.
    """
    points = [{"id": "sft", "method": "sft", "seed": None, "strength": 0.0, "strength_key": None,
               "step": 0, "path": str(path("sft")), "final": True, "run": "sft"}]
    for run in runs:
        ckpts = checkpoints_of(path(run.rel))
        for i, (step, ckpt) in enumerate(ckpts):
            points.append({"id": f"{run.rel}/step-{step}", "method": run.method, "seed": run.seed, "run": run.rel,
                           "strength": run.strength, "strength_key": run.strength_key, "step": step,
                           "path": str(ckpt), "final": i == len(ckpts) - 1})
    return points
