"""Sampling completions for the pairs stage. The sampler itself lives with the trainers
(``trl_plus.trainers.sampling``), which online DPO shares; the stage imports it from here."""

from __future__ import annotations

from ..trainers.sampling import best_worst_pairs, sample

__all__ = ["sample", "best_worst_pairs"]
