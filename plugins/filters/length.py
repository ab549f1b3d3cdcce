"""Data filter: token-length bounds on the prompt and on every completion column."""

from __future__ import annotations

import trl_plus
from trl_plus.errors import RecipeError

from ._text import as_text, completion_columns


class LengthFilter:
    """Keep rows whose prompt and completions (chosen, rejected or completion) are in bounds.

    ``max_length`` bounds prompt + completion (each completion column): set it to the
    trainer's ``max_length`` to drop, and count, the rows TRL would otherwise truncate.
    Lengths are of the text alone (a chat template adds its own tokens). ``reasons`` counts
    why rows were dropped (a row may have several reasons).
    """

    def __init__(
        self,
        max_prompt_tokens: int | None = None,
        min_completion_tokens: int = 0,
        max_completion_tokens: int | None = None,
        max_length: int | None = None,
        tokenizer=None,
    ):
        if tokenizer is None:
            raise RecipeError("the length filter needs the run's tokenizer, and none was given")
        self.tokenizer = tokenizer
        self.max_prompt, self.min_completion, self.max_completion = (
            max_prompt_tokens,
            min_completion_tokens,
            max_completion_tokens,
        )
        self.max_length = max_length
        self.reasons = {"prompt_too_long": 0, "completion_too_short": 0, "completion_too_long": 0, "over_max_length": 0}

    def _lengths(self, column):
        return [len(ids) for ids in self.tokenizer([as_text(v) for v in column], add_special_tokens=False)["input_ids"]]

    def __call__(self, batch):
        import numpy as np

        n = len(next(iter(batch.values())))
        keep = np.ones(n, dtype=bool)
        prompt = np.zeros(n, dtype=np.int64)
        if (self.max_prompt is not None or self.max_length is not None) and "prompt" in batch:
            prompt = np.asarray(self._lengths(batch["prompt"]), dtype=np.int64)
            if self.max_prompt is not None:
                keep &= self._count("prompt_too_long", prompt > self.max_prompt)
        for column in completion_columns(batch):
            lengths = np.asarray(self._lengths(batch[column]), dtype=np.int64)
            keep &= self._count("completion_too_short", lengths < self.min_completion)
            if self.max_completion is not None:
                keep &= self._count("completion_too_long", lengths > self.max_completion)
            if self.max_length is not None:
                keep &= self._count("over_max_length", prompt + lengths > self.max_length)
        return keep.tolist()

    def _count(self, reason: str, dropped):
        self.reasons[reason] += int(dropped.sum())
        return ~dropped


@trl_plus.hookimpl
def trl_plus_register_data_filters(register):
    register.add("length", LengthFilter)
