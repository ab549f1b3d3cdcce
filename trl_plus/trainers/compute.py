"""What a training run spends, counted as it trains and saved with every checkpoint.

:func:`attach` gives a trainer one :class:`ComputeCounter` (a ``TrainerCallback``);
``train_from_recipe`` attaches it to every trainer kind, and ``trl_plus.DPOTrainer`` and
``trl_plus.PPOTrainer`` attach it themselves, so a trainer built in Python counts too. It
counts, on every process, while the training loop runs (evaluation is not counted):

- **trained tokens**: each batch handed to ``compute_loss`` with gradients on (a forward
  and a backward pass), summed from its ``attention_mask`` (or ``prompt_mask`` plus
  ``completion_mask``: the online trainers' batches); each such batch is one backward pass;
- **generated tokens**: the completion tokens the online trainers (TRL's RLOO and GRPO
  families, PPO included) sample in their rollouts (up to and including each completion's
  EOS: what they keep of it), read from what ``_generate`` returns; another trainer that
  samples calls :meth:`ComputeCounter.add_generated`;
- **forward passes**: calls of the policy, the reference model and a critic (each
  top-level call one pass) outside generation;
- **wall time** of the training loop, summed over the sessions of a resumed run.

Each save (``save_model``: every ``checkpoint-N`` and the final folder) writes the totals
so far, summed over processes, with the FLOPs estimate, as ``compute.json``
(``trl_plus.run_folder.compute``), before the Trainer writes the checkpoint's
``trainer_state.json``: a complete checkpoint has its record. A run resumed from a
checkpoint continues from the checkpoint's record; from one without a record it counts
from the checkpoint's step, and its records say so (``counted_from_step``).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..run_folder.compute import (COMPUTE_VERSION, COUNTS, FLOPS_FORMULA, estimate_flops, read_compute,
                                  write_compute)

__all__ = ["ComputeCounter", "attach", "tokens_in_batch"]

# What is counted per process and summed over processes at each step boundary: the record's
# counts, and the training batches that had no mask to count tokens from.
_KEYS = (*COUNTS, "uncounted_batches")


def tokens_in_batch(inputs) -> int | None:
    """The tokens of a training batch, from its masks (None when it has none to count from)."""
    if not isinstance(inputs, dict):
        return None
    mask = inputs.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        return int(mask.sum().item())
    prompt, completion = inputs.get("prompt_mask"), inputs.get("completion_mask")
    if isinstance(prompt, torch.Tensor) and isinstance(completion, torch.Tensor):
        return int(prompt.sum().item() + completion.sum().item())
    ids = inputs.get("input_ids")
    if isinstance(ids, torch.Tensor):
        return int(ids.numel())
    return None


def _parameters(module, skip: set[int] = frozenset()) -> int:
    """Parameters of ``module`` (DeepSpeed ZeRO-3 keeps each one's full size in ``ds_numel``)."""
    if not isinstance(module, torch.nn.Module):
        return 0
    return sum(int(getattr(p, "ds_numel", p.numel())) for p in module.parameters() if id(p) not in skip)


def _generates(trainer) -> bool:
    """Whether the trainer is one of TRL's online trainers, whose ``_generate`` returns the
    completions' token ids second."""
    import trl

    return isinstance(trainer, (trl.RLOOTrainer, trl.GRPOTrainer)) and callable(getattr(trainer, "_generate", None))


class ComputeCounter(TrainerCallback):
    """Counts a trainer's compute and writes ``compute.json`` with every save (see the module)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.totals = dict.fromkeys(_KEYS, 0)  # every process's, up to the last step boundary
        self.pending = dict.fromkeys(_KEYS, 0)  # this process's since the last step boundary
        self.counted_from_step = 0
        self.parameters = 0
        self.critic_parameters = 0
        self.active = False  # inside the training loop
        self._generating = 0
        self._wall_before = 0.0  # wall time of earlier sessions (a resumed run's checkpoint)
        self._started: float | None = None
        self._resume = None  # what train() was asked to resume from
        self._handles: list = []

    # -- counting -----------------------------------------------------------------------------
    def add_generated(self, tokens: int) -> None:
        """Count ``tokens`` sampled completion tokens (a trainer that samples in its own way)."""
        if self.active and self.trainer.model.training:
            self.pending["generated_tokens"] += int(tokens)

    def _batch(self, inputs) -> None:
        if not (self.active and torch.is_grad_enabled() and self.trainer.model.training):
            return
        tokens = tokens_in_batch(inputs)
        if tokens is None:
            self.pending["uncounted_batches"] += 1
        else:
            self.pending["trained_tokens"] += tokens
        self.pending["backward_passes"] += 1

    def _forward(self, module, args, output) -> None:
        if self.active and not self._generating and self.trainer.model.training:
            self.pending["forward_passes"] += 1

    def _completions(self, result) -> None:
        ids = result[1] if isinstance(result, tuple) and len(result) > 1 else None
        if isinstance(ids, list) and all(hasattr(c, "__len__") for c in ids):
            self.add_generated(sum(len(c) for c in ids))

    # -- the training loop ------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.totals = dict.fromkeys(_KEYS, 0)
        self.pending = dict.fromkeys(_KEYS, 0)
        self.counted_from_step, self._wall_before = 0, 0.0
        if state.global_step > 0:
            self._continue_from(self._checkpoint(args, state), state.global_step)
        self._measure_models()
        self._started = time.perf_counter()
        self.active = True

    def on_step_end(self, args, state, control, **kwargs):
        self._flush()

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()
        self._wall_before = self.wall_time()
        self._started = None
        self.active = False
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _checkpoint(self, args, state):
        """The folder the run resumed from: what ``train`` was given, else ``checkpoint-<step>``."""
        resume = self._resume
        if isinstance(resume, (str, Path)) and Path(resume).is_dir():
            return Path(resume)
        return Path(args.output_dir) / f"checkpoint-{state.global_step}"

    def _continue_from(self, folder, step: int) -> None:
        record = read_compute(folder)
        if record is None:  # saved before compute was recorded: counts start here, and say so
            self.counted_from_step = step
            return
        self.totals = {k: int(record.get(k) or 0) for k in _KEYS}
        self.counted_from_step = int(record.get("counted_from_step") or 0)
        self._wall_before = float(record["wall_time_s"])

    def _measure_models(self) -> None:
        trainer = self.trainer
        policy = trainer.model
        self.parameters = _parameters(policy)
        own = {id(p) for p in policy.parameters()} if isinstance(policy, torch.nn.Module) else set()
        critic = getattr(trainer, "critic", None)
        self.critic_parameters = _parameters(critic, own)  # a value head on the policy's base: the head alone
        modules = [policy, getattr(trainer, "ref_model", None), critic]
        seen: set[int] = set()
        for module in modules:
            if isinstance(module, torch.nn.Module) and id(module) not in seen:
                seen.add(id(module))
                self._handles.append(module.register_forward_hook(self._forward))

    def _flush(self) -> None:
        """Add every process's counts since the last step boundary to the totals (all processes
        call it at the same points: the end of each step and of training)."""
        values = [self.pending[k] for k in _KEYS]
        accelerator = getattr(self.trainer, "accelerator", None)
        if accelerator is not None and accelerator.num_processes > 1:
            summed = accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=accelerator.device), "sum")
            values = [int(v) for v in summed.tolist()]
        for key, value in zip(_KEYS, values):
            self.totals[key] += value
        self.pending = dict.fromkeys(_KEYS, 0)

    def wall_time(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._wall_before + running

    def record(self) -> dict:
        """The totals so far, with the FLOPs estimate: what ``compute.json`` holds."""
        trainer = self.trainer
        accelerator = getattr(trainer, "accelerator", None)
        return {
            "version": COMPUTE_VERSION,
            "step": int(trainer.state.global_step),
            **{k: int(self.totals[k]) for k in COUNTS},
            "parameters": self.parameters,
            "critic_parameters": self.critic_parameters,
            "flops": estimate_flops(self.parameters, self.totals["trained_tokens"], self.totals["generated_tokens"],
                                    self.critic_parameters),
            "flops_formula": FLOPS_FORMULA,
            "wall_time_s": round(self.wall_time(), 3),
            "processes": getattr(accelerator, "num_processes", 1),
            "uncounted_batches": int(self.totals["uncounted_batches"]),
            "counted_from_step": self.counted_from_step,
        }

    def write(self, folder) -> None:
        if self.parameters == 0:  # saved before training began: nothing counted, nothing to record
            return
        if self.trainer.args.should_save:
            write_compute(folder, self.record())


def attach(trainer) -> ComputeCounter:
    """The trainer's :class:`ComputeCounter`, added (once) as a callback, with the trainer's
    ``compute_loss``, ``save_model``, ``train`` and (online trainers) ``_generate`` wrapped
    on the instance to feed it."""
    existing = vars(trainer).get("compute_counter")
    if isinstance(existing, ComputeCounter):
        return existing
    counter = ComputeCounter(trainer)
    trainer.compute_counter = counter
    trainer.add_callback(counter)

    compute_loss, save_model, train = trainer.compute_loss, trainer.save_model, trainer.train

    @functools.wraps(compute_loss)
    def counted_compute_loss(model, inputs, *args, **kwargs):
        counter._batch(inputs)
        return compute_loss(model, inputs, *args, **kwargs)

    @functools.wraps(save_model)
    def recorded_save_model(output_dir=None, *args, **kwargs):
        save_model(output_dir, *args, **kwargs)
        counter.write(output_dir or trainer.args.output_dir)

    @functools.wraps(train)
    def noted_train(resume_from_checkpoint=None, *args, **kwargs):
        counter._resume = resume_from_checkpoint
        return train(resume_from_checkpoint, *args, **kwargs)

    trainer.compute_loss, trainer.save_model, trainer.train = counted_compute_loss, recorded_save_model, noted_train
    if _generates(trainer):
        generate = trainer._generate

        @functools.wraps(generate)
        def counted_generate(*args, **kwargs):
            counter._generating += 1
            try:
                result = generate(*args, **kwargs)
            finally:
                counter._generating -= 1
            counter._completions(result)
            return result

        trainer._generate = counted_generate
    return counter
