"""Data filter: drop preference pairs whose chosen and rejected are the same."""

from __future__ import annotations

import trl_plus

from ._text import as_text, normalise


class DistinctPair:
    """Keep pairs whose chosen differs from rejected (after normalisation if asked)."""

    def __init__(self, normalize: bool = False):
        self.normalize = normalize

    def __call__(self, batch):
        fix = normalise if self.normalize else (lambda t: t)
        return [fix(as_text(c)) != fix(as_text(r)) for c, r in zip(batch["chosen"], batch["rejected"])]


@trl_plus.hookimpl
def trl_plus_register_data_filters(register):
    register.add("distinct_pair", DistinctPair)
