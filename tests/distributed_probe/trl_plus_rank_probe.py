"""A trl-plus plugin for the distributed tests, installed through an entry point so that
every rank loads it as it would any third-party plugin.

Each rank writes ``rank<N>.json`` into ``$RANK_PROBE_DIR`` at exit: the world it ran in,
a hash of the rows of every training batch it got, hashes of its policy (and critic)
weights before and after training, and every file or folder it created or opened for
writing under ``$RANK_PROBE_WATCH`` (Python-level opens and mkdirs, seen through an
audit hook).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys

import trl_plus

RANK = int(os.environ.get("RANK", "0"))
WATCH = os.path.abspath(os.environ.get("RANK_PROBE_WATCH", "/nonexistent"))
RECORD: dict = {"rank": RANK, "steps": [], "writes": [], "weights": {}}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def _under_watch(path) -> str | None:
    try:
        full = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return None  # a file descriptor
    return os.path.relpath(full, WATCH) if full.startswith(WATCH + os.sep) else None


def _audit(event, args):
    if event == "open" and len(args) >= 3:
        path, mode, flags = args[:3]
        writing = (isinstance(flags, int) and flags & _WRITE_FLAGS) or (isinstance(mode, str) and set(mode) & set("wax+"))
        rel = _under_watch(path) if writing else None
    elif event in ("os.mkdir", "os.rename", "os.replace", "shutil.copyfile"):
        rel = _under_watch(args[1] if event != "os.mkdir" else args[0])
    else:
        return
    if rel is not None:
        RECORD["writes"].append(rel)


sys.addaudithook(_audit)


def _digest(model) -> str:
    """A hash of the model's full weights (a sharded model's gathered first: every rank calls this)."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        if hasattr(p, "full_tensor"):  # FSDP2: a DTensor shard
            p = p.full_tensor()
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _sharded(model) -> bool:
    return any(type(p).__name__ == "DTensor" or hasattr(p, "full_tensor") for p in model.parameters())


def _row_hashes(inputs) -> list[str]:
    """One hash per row of a training batch: a list of dataset rows (PPO's prompts), or
    a dict of tensors (DPO's tokenised pairs)."""
    if isinstance(inputs, list):
        return [hashlib.sha256(str(r.get("prompt")).encode()).hexdigest()[:12] for r in inputs]
    key = next(k for k in ("prompt_ids", "prompt_input_ids", "input_ids", "chosen_input_ids") if k in inputs)
    return [hashlib.sha256(row.cpu().numpy().tobytes()).hexdigest()[:12] for row in inputs[key]]


def _models(trainer) -> dict:
    models = {"policy": trainer.accelerator.unwrap_model(trainer.model)}
    if getattr(trainer, "critic", None) is not None:
        models["critic"] = trainer.critic
    return models


@trl_plus.hookimpl
def trl_plus_trainer_created(trainer, recipe):
    from transformers import TrainerCallback

    RECORD["world_size"] = trainer.accelerator.num_processes
    RECORD["distributed_type"] = str(trainer.accelerator.distributed_type)
    step = trainer.training_step

    def training_step(model, inputs, *args, **kwargs):
        RECORD["steps"].append(_row_hashes(inputs))
        return step(model, inputs, *args, **kwargs)

    trainer.training_step = training_step

    class Weights(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            RECORD["weights"]["before"] = {k: _digest(m) for k, m in _models(trainer).items()}

        def on_train_end(self, args, state, control, **kwargs):
            RECORD["weights"]["after"] = {k: _digest(m) for k, m in _models(trainer).items()}
            RECORD["sharded"] = {k: _sharded(m) for k, m in _models(trainer).items()}

    trainer.add_callback(Weights())


@atexit.register
def _dump():
    folder = os.environ.get("RANK_PROBE_DIR")
    if folder and "world_size" in RECORD:
        with open(os.path.join(folder, f"rank{RANK}.json"), "w") as f:
            json.dump(RECORD, f)
