"""A run's compute record on disk: ``compute.json`` in each ``checkpoint-N`` folder and in
the run's final folder.

What a training run spent up to that save, counted from its first step (across resumed
sessions): ``generated_tokens`` (completion tokens sampled during training: online
trainers' rollouts; 0 for DPO), ``trained_tokens`` (the tokens of every batch that went
through a forward and backward pass, summed from the batches' attention masks),
``forward_passes`` and ``backward_passes``, ``flops`` and ``wall_time_s``. The trainers
write it (``trl_plus.trainers.compute``); the pipeline's evaluation and its report read it.

FLOPs are the standard parameter-count approximation (Kaplan et al. 2020): a forward and
backward pass costs about ``6 N`` floating-point operations per token and a forward pass
``2 N``, ``N`` the parameter count, so ``6 * N_trained * trained_tokens + 2 * N *
generated_tokens``, with ``N`` the policy's parameters (all of them, frozen ones included:
LoRA still runs the whole model) and ``N_trained`` those plus a critic's own (PPO trains
its value model on the same tokens). It leaves out attention's share (small at short
sequence lengths) and passes that train nothing: a reference model's forward passes,
PPO's no-gradient passes over a rollout (``forward_passes`` counts them).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

COMPUTE_FILE = "compute.json"
COMPUTE_VERSION = 1
FLOPS_FORMULA = "6 * (parameters + critic_parameters) * trained_tokens + 2 * parameters * generated_tokens"
COUNTS = ("generated_tokens", "trained_tokens", "forward_passes", "backward_passes")


def estimate_flops(parameters: int, trained_tokens: int, generated_tokens: int, critic_parameters: int = 0) -> float:
    """``6 (N + N_critic) trained_tokens + 2 N generated_tokens``: see the module's text."""
    return 6.0 * (parameters + critic_parameters) * trained_tokens + 2.0 * parameters * generated_tokens


def write_compute(folder: str | os.PathLike, record: dict) -> Path:
    """Write ``record`` as ``folder/compute.json`` (whole or not at all: a temporary file, then renamed)."""
    path = Path(folder) / COMPUTE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)
    return path


def read_compute(folder: str | os.PathLike | None) -> dict | None:
    """The compute record in ``folder`` (a checkpoint or a run's final folder), or None where
    there is none or it is not a record (never a guess).

    A record whose counts start after step 0 (``counted_from_step``: the run resumed from
    a checkpoint saved without one) is returned as it is, marked ``"complete": False``.
    """
    if not folder:
        return None
    try:
        record = json.loads((Path(folder) / COMPUTE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not is_record(record):
        return None
    return {**record, "complete": not record.get("counted_from_step")}


def is_record(record) -> bool:
    """Whether ``record`` holds what a compute record must: the counts, FLOPs and wall time, all finite."""
    if not isinstance(record, dict):
        return False
    numbers = [record.get(k) for k in (*COUNTS, "flops", "wall_time_s")]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
               for v in numbers)
