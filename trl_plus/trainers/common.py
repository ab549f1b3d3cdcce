"""What the trainers share: resolving components, the filter report, recipe runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..manager import Hooks


def tokenizer_of(processing_class):
    return getattr(processing_class, "tokenizer", processing_class)


def as_text(value) -> str:
    """A prompt or completion as text (conversational messages joined by their content)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(as_text(m.get("content", "")) if isinstance(m, dict) else as_text(m) for m in value)
    if isinstance(value, dict):
        return as_text(value.get("content", ""))
    return str(value)


def schedule_state(schedule) -> dict | None:
    """What a checkpoint keeps of a KL schedule (the ``CheckedSchedule`` around it), so that
    a resumed run continues the schedule rather than restarting it: its ``state()`` when it
    has one (:class:`trl_plus.protocols.KLSchedule`; the adaptive controller's value and the
    count it last adapted at), else its plain attributes if all are JSON values (a schedule
    object or function that keeps them); None when there is nothing to keep."""
    from ..errors import ComponentError

    fn = getattr(schedule, "fn", None)
    if callable(getattr(fn, "state", None)):
        try:
            state = fn.state()
            return None if state is None else json.loads(json.dumps(dict(state), allow_nan=False))
        except Exception as exc:
            raise ComponentError(f"KL schedule {schedule.label!r}: state() gave no JSON mapping a checkpoint "
                                 f"can keep: {exc!r}") from exc
    attrs = getattr(fn, "__dict__", None)
    if not attrs:
        return None
    try:
        return json.loads(json.dumps(attrs, allow_nan=False))
    except (TypeError, ValueError):
        return None


def restore_schedule(schedule, state: dict | None) -> None:
    """Put back what :func:`schedule_state` saved (nothing when either is missing): through
    the schedule's ``load_state(state)`` when it has one, else by setting its attributes
    (how every checkpoint was read before ``load_state`` existed)."""
    from ..errors import ComponentError

    if not state or schedule is None:
        return
    if callable(getattr(schedule.fn, "load_state", None)):
        try:
            schedule.fn.load_state(state)
        except Exception as exc:
            raise ComponentError(f"KL schedule {schedule.label!r} could not load the state its checkpoint "
                                 f"holds ({state!r}): {exc!r}") from exc
    else:
        vars(schedule.fn).update(state)


# An online trainer's running counts, as its checkpoint keeps them. Under DDP every rank
# normalises and filters its own rollouts; the state saved is the main process's, and a
# resumed run starts every rank from it.


def normalised_sources(trainer) -> list:
    """The trainer's reward sources that keep running normalisation statistics."""
    mix = getattr(trainer, "reward_mix", None)
    return [s for s in mix.sources if s.norm is not None] if mix is not None else []


def reward_norms_state(trainer) -> dict:
    """Each normalised reward source's running statistics, by the label it logs under."""
    return {s.label: s.norm.state() for s in normalised_sources(trainer)}


def restore_reward_norms(trainer, norms: dict | None) -> None:
    for source in normalised_sources(trainer):
        if (norms or {}).get(source.label):
            source.norm.load_state(norms[source.label])


def rollout_counts_state(trainer) -> dict:
    """The rollouts dropped and unscored so far, and each rollout filter's counts."""
    return {"dropped": trainer._rollout_dropped, "unscored": trainer._rollout_unscored,
            **trainer._rollout_chain.counts_state()}


def restore_rollout_counts(trainer, rollouts: dict | None) -> None:
    if rollouts:
        trainer._rollout_dropped = int(rollouts.get("dropped", 0))
        trainer._rollout_unscored = int(rollouts.get("unscored", 0))
        trainer._rollout_chain.restore_counts(rollouts)


def save_run(trainer, output_dir: str, recipe=None, started: float | None = None) -> None:
    """Save model, tokenizer, trainer state (log history) and the recipe, on the main process.

    The recipe's copy goes to ``recipe.yaml``, unless that file is the recipe being run:
    then it is left as it is, and the resolved copy (if it differs) goes to
    ``recipe.resolved.yaml``. ``run_info.json``, written last, records the trainer, the
    wall time, the final global step and, for a resumed run, the checkpoint and step it
    continued from. A failed write is a ``SaveError`` naming the folder (the run's
    checkpoints are left as they were).
    """
    from ..checkpointing import save_failure
    from ..run_folder import recipe_copy_name

    try:
        trainer.save_model(output_dir)
        trainer.save_state()
        if trainer.is_world_process_zero():
            if recipe is not None and (name := recipe_copy_name(recipe, output_dir)):
                (Path(output_dir) / name).write_text(recipe.to_yaml())
            if started is not None:
                info = {"trainer": getattr(recipe, "trainer", None) if recipe is not None else None,
                        "wall_time_s": round(time.time() - started, 3), "global_step": trainer.state.global_step}
                if getattr(trainer, "resumed_from", None):
                    info["resumed_from"] = {"checkpoint": str(trainer.resumed_from), "global_step": trainer.start_step}
                (Path(output_dir) / "run_info.json").write_text(json.dumps(info, indent=2))
    except Exception as exc:
        raise save_failure(f"could not save the trained model to {output_dir}", output_dir, exc) from exc


def hooks_for(plugin_manager) -> Hooks:
    return Hooks.of(plugin_manager)
