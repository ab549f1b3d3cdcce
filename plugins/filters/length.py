"""Data filter: token-length bounds on the prompt and on every completion column."""

from __future__ import annotations

import trl_plus
from trl_plus.errors import RecipeError

from ._text import as_text, completion_columns


class LengthFilter:
    """Keep rows whose prompt and completions (chosen, rejected or completion) are in bounds."""

    def __init__(
        self,
        max_prompt_tokens: int | None = None,
        min_completion_tokens: int = 0,
        max_completion_tokens: int | None = None,
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

    def _lengths(self, column):
        return [len(ids) for ids in self.tokenizer([as_text(v) for v in column], add_special_tokens=False)["input_ids"]]

    def __call__(self, batch):
        n = len(next(iter(batch.values())))
        keep = [True] * n
        if self.max_prompt is not None and "prompt" in batch:
            keep = [k and length <= self.max_prompt for k, length in zip(keep, self._lengths(batch["prompt"]))]
        for column in completion_columns(batch):
            lengths = self._lengths(batch[column])
            keep = [
                k and length >= self.min_completion and (self.max_completion is None or length <= self.max_completion)
                for k, length in zip(keep, lengths)
            ]
        return keep


@trl_plus.hookimpl
def trl_plus_register_data_filters(register):
    register.add("length", LengthFilter)
