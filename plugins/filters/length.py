"""Data filter: token-length bounds on the prompt and on every completion column."""

from __future__ import annotations

import trl_plus
from trl_plus.errors import RecipeError

from ._text import as_text, completion_columns


class _Lengths:
    """Token counts of one batch column, tokenising only the rows a bound needs.

    With a fast tokenizer that has no normaliser (byte-level BPE, most modern LLMs), a
    text never has more tokens than its UTF-8 bytes + 1 (a byte is at most one token; a
    prefix space at most one more), so ``n`` starts as that upper bound and a row is
    tokenised only when its bound could break one; other tokenizers count every row.
    """

    def __init__(self, tokenizer, column, screen: bool):
        import numpy as np

        self.tokenizer, self.texts = tokenizer, [as_text(v) for v in column]
        if screen:
            self.n = np.fromiter((len(t.encode("utf-8")) + 1 for t in self.texts), dtype=np.int64, count=len(self.texts))
            self.exact = np.zeros(len(self.texts), dtype=bool)
        else:
            self.n = self._count(self.texts)
            self.exact = np.ones(len(self.texts), dtype=bool)

    def _count(self, texts):
        """Token counts of ``texts``: a fast tokenizer's Rust backend encodes the batch
        (in parallel, without building offsets or Python lists of ids), the same ids the
        tokenizer's own call gives; another tokenizer is called as it is."""
        import numpy as np

        if not texts:
            return np.zeros(0, dtype=np.int64)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
            encodings = encode(list(texts), add_special_tokens=False)
            return np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(texts))
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(texts))

    def refine(self, rows):
        """Exact counts for ``rows`` (a mask): the ones whose upper bound breaks a limit."""
        import numpy as np

        need = np.flatnonzero(rows & ~self.exact)
        if len(need):
            self.n[need] = self._count([self.texts[i] for i in need])
            self.exact[need] = True
        return self.n


class LengthFilter:
    """Keep rows whose prompt and completions (chosen, rejected or completion) are in bounds.

    ``max_length`` bounds prompt + completion (each completion column): set it to the
    trainer's ``max_length`` to drop, and count, the rows TRL would otherwise truncate.
    ``reasons`` counts why rows were dropped (a row may have several reasons).

    What is counted depends on where the filter runs. In ``trl_plus.DPOTrainer`` it runs
    after TRL has tokenised the data (:meth:`filter_token_lengths`) and counts TRL's own
    token ids: the prompt's, and each completion's with the EOS TRL appends and any chat
    template tokens, so ``max_length`` drops exactly the rows TRL would truncate, and the
    data is tokenised once. Elsewhere (PPO's prompts, a chain applied to text) it counts
    the tokens of the text alone.
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
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._screen = backend is not None and backend.normalizer is None

    def __call__(self, batch):
        """Keep/drop per row of a text batch: the token counts each bound needs (exact
        where an upper bound could break it, see :class:`_Lengths`), judged by
        :meth:`filter_token_lengths`."""
        prompt = None
        if (self.max_prompt is not None or self.max_length is not None) and "prompt" in batch:
            prompt = _Lengths(self.tokenizer, batch["prompt"], self._screen)
            if self.max_prompt is not None:
                prompt.refine(prompt.n > self.max_prompt)
        completions = {}
        for column in completion_columns(batch):
            lengths = _Lengths(self.tokenizer, batch[column], self._screen)
            if self.min_completion > 0:
                lengths.refine(lengths.n >= self.min_completion)
            if self.max_completion is not None:
                lengths.refine(lengths.n > self.max_completion)
            if self.max_length is not None:
                if prompt is not None:
                    prompt.refine(lengths.n + prompt.n > self.max_length)
                lengths.refine(lengths.n + (prompt.n if prompt is not None else 0) > self.max_length)
            completions[column] = lengths.n
        counts = ({"prompt": prompt.n} if prompt is not None else {}) | completions
        if not counts:  # no bound applies to these columns
            return [True] * len(next(iter(batch.values())))
        return self.filter_token_lengths(counts).tolist()

    def filter_token_lengths(self, lengths):
        """Keep/drop per row from token counts: ``lengths`` maps ``prompt`` and each
        completion column to a numpy array of per-row lengths (TRL's token ids)."""
        import numpy as np

        prompt = lengths.get("prompt")
        n = len(next(iter(lengths.values())))
        keep = np.ones(n, dtype=bool)
        if self.max_prompt is not None and prompt is not None:
            keep &= self._count("prompt_too_long", prompt > self.max_prompt)
        for column, counts in lengths.items():
            if column == "prompt":
                continue
            if self.min_completion > 0:
                keep &= self._count("completion_too_short", counts < self.min_completion)
            if self.max_completion is not None:
                keep &= self._count("completion_too_long", counts > self.max_completion)
            if self.max_length is not None:
                total = counts + (prompt if prompt is not None else 0)
                keep &= self._count("over_max_length", total > self.max_length)
        return keep

    def _count(self, reason: str, dropped):
        self.reasons[reason] += int(dropped.sum())
        return ~dropped


@trl_plus.hookimpl
def trl_plus_register_data_filters(register):
    register.add("length", LengthFilter)
