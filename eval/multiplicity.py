"""Family-wise error control for the report's headline comparisons.

The report tests several hypotheses at once (each RL method against DPO, on gold reward
and on win rate). Each at 5% alone, the chance that at least one names a false winner is
up to 5% times their number; Holm's step-down procedure keeps that chance at 5% for the
whole family, is never less powerful than Bonferroni's, and assumes nothing about how
the tests depend on each other (they share seeds and checkpoints here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from trl_plus.errors import DataError


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order; None stays None and is not counted.

    The i-th smallest of m p-values is multiplied by (m - i + 1), the running maximum is
    taken so the adjusted values keep their order, and each is capped at 1. A hypothesis
    is rejected at family-wise level alpha when its adjusted p-value is at most alpha.
    """
    values = []
    for i, p in enumerate(p_values):
        if p is None:
            continue
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 <= p <= 1:
            raise DataError(f"p-value {i} must be a number in [0, 1] or None, got {p!r}")
        values.append((float(p), i))
    m = len(values)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(values)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
