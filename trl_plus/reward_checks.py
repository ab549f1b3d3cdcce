"""What a reward source answers, checked: one number (or None) per completion, and not
None for every completion of batch after batch.

A source is named in errors as its recipe key, its label and what it is
(``rewards[0] 'letter_e' (python: toy_rewards.py:char_share)``); a bad answer is
described by its type and size, never printed whole.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

from .errors import RewardSourceError

# A built source may carry ``trl_plus_ref``: a short, secret-free text saying what it is
# (``"python: mod:fn"``, ``"http: https://host/score"``), shown after its name in errors.
REF_ATTRIBUTE = "trl_plus_ref"


def source_name(where: str, label: str, fn, with_ref: bool = True) -> str:
    """How errors name a reward source: ``rewards[0] (python: mod:fn)`` or ``rewards[0] 'alias' (...)``."""
    ref = getattr(fn, REF_ATTRIBUTE, None)
    ref = ref if isinstance(ref, str) else None
    name = where if ref and label == ref.partition(":")[0] else f"{where} {label!r}"
    return f"{name} ({ref})" if ref and with_ref else name


def _answer_shape(answer) -> str:
    if isinstance(answer, Mapping):
        return f"a {type(answer).__name__} with {len(answer)} keys"
    if isinstance(answer, (str, bytes)):
        return f"a {type(answer).__name__} of {len(answer)} characters"
    shape = getattr(answer, "shape", None)
    if shape is not None:
        return f"a {type(answer).__name__} of shape {tuple(shape)}"
    return f"a {type(answer).__name__}"


def score_list(name: str, answer, n: int) -> list:
    """``answer`` as a list of ``n`` entries, or a RewardSourceError saying what came instead."""
    expected = f"instead of a list of {n} scores (one per completion; None for 'no opinion')"
    if answer is None:
        raise RewardSourceError(f"reward source {name} returned None {expected}")
    if isinstance(answer, (Mapping, str, bytes)):
        raise RewardSourceError(f"reward source {name} returned {_answer_shape(answer)} {expected}")
    ndim = getattr(answer, "ndim", None)
    if ndim is not None and hasattr(answer, "tolist"):  # a tensor or an array
        if ndim != 1:
            raise RewardSourceError(f"reward source {name} returned {_answer_shape(answer)} {expected}")
        answer = answer.tolist()
    if isinstance(answer, numbers.Number) or not isinstance(answer, Iterable):
        raise RewardSourceError(f"reward source {name} returned {_answer_shape(answer)} {expected}")
    scores = list(answer)
    if len(scores) != n:
        raise RewardSourceError(f"reward source {name} returned {len(scores)} scores for {n} completions")
    return scores


def as_number(value) -> float | None:
    """``value`` as a float if it is a number (a bool, a NumPy or 0-d tensor scalar too); else None."""
    if isinstance(value, (str, bytes, Mapping)) or not (isinstance(value, numbers.Real) or hasattr(value, "__float__")):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def not_a_score(value, i: int) -> str:
    """``'high' for completion 1 (a str): ...``: one entry, shown shortened."""
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} for completion {i} ({_answer_shape(value)}): a score is a number, or None for 'no opinion'"


def numeric_scores(name: str, answer, n: int) -> list[float | None]:
    """One float (NaN kept) or None per completion from what a source returned; a clear
    error for anything else."""
    out: list[float | None] = []
    for i, s in enumerate(score_list(name, answer, n)):
        value = None if s is None else as_number(s)
        if s is not None and value is None:
            raise RewardSourceError(f"reward source {name} returned {not_a_score(s, i)}")
        out.append(value)
    return out


def checked_scores(name: str, answer, completions: Sequence[str]) -> list[float | None]:
    """One finite float or None per completion; NaN or infinity is an error too (training
    on it would poison every later step)."""
    out = numeric_scores(name, answer, len(completions))
    for i, value in enumerate(out):
        if value is not None and not math.isfinite(value):
            raise RewardSourceError(
                f"reward source {name} returned {value} for completion {i} "
                f"(completion: {completions[i][:80]!r}); return None for 'no opinion'"
            )
    return out


class UnscoredBatches:
    """Stops a run whose reward sources score nothing: after ``limit`` consecutive training
    rollout batches in which no completion got a score, a RewardSourceError. ``limit`` 0
    turns the check off. A batch with at least one score resets the count.

    :param sources: the names of the reward sources, for the message.
    """

    def __init__(self, limit: int, sources: Sequence[str]):
        self.limit, self.sources, self.streak = int(limit), list(sources), 0

    def check(self, scores, training: bool = True) -> None:
        """``scores``: the whole batch's scores (all processes), NaN where unscored, one
        column per source or one total column."""
        if not training or self.limit <= 0:
            return
        import torch

        table = scores if scores.dim() == 2 else scores.unsqueeze(1)
        n_scored = int((~torch.isnan(table)).any(dim=1).sum().item())
        if n_scored:
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= self.limit:
            raise RewardSourceError(
                f"no completion was scored in {self.streak} consecutive rollout batches of {table.size(0)} "
                f"completions: every reward source ({', '.join(self.sources) or 'none'}) answered None for every "
                "completion, so there is nothing to train on. Fix the reward source, or raise "
                "ppo.max_unscored_batches (0 turns this check off)"
            )


def unscored_guard(trainer) -> UnscoredBatches:
    """The trainer's ``UnscoredBatches``, made at first use from ``args.max_unscored_batches``."""
    guard = trainer.__dict__.get("_unscored_guard")
    if guard is None:
        mix = getattr(trainer, "reward_mix", None)
        names = mix.names if mix is not None else list(getattr(trainer, "reward_func_names", []))
        guard = trainer._unscored_guard = UnscoredBatches(getattr(trainer.args, "max_unscored_batches", 3), names)
    return guard
