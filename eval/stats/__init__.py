"""The statistics of the evaluation and of the report, in one place.

- :mod:`.win_rate`: win rates against a reference, with bootstrap intervals over prompts,
  and the paired difference of two candidates;
- :mod:`.length_control`: the length-controlled win rate and its bootstrap;
- :mod:`.bootstrap`: the percentile bootstrap over prompts, and a score's mean with its
  interval;
- :mod:`.intervals`: every t-interval (a mean over seeds, Welch's difference of two
  methods, a method against an estimate with its own standard error), the Wilson interval
  of a proportion and the normal tails of z-tests;
- :mod:`.power`: the power of the verdict's Welch test and the seeds a comparison needs.

Family-wise control over several tests is :mod:`trl_plus.eval.multiplicity`.
"""

from __future__ import annotations

from .bootstrap import DEFAULT_RESAMPLES, bootstrap_ci, counts_of, mean_with_ci, resample_counts
from .intervals import (
    MIN_SEEDS,
    Z95,
    normal_isf,
    normal_sf,
    offset_interval,
    satterthwaite_df,
    t_interval,
    t_quantile,
    welch_interval,
    wilson_interval,
)
from .length_control import LC_MAX_ITER, lc_bootstrap_estimates, length_controlled_win_rate
from .power import (
    POWER_METHOD,
    min_detectable_effect,
    power_analysis,
    power_by_seeds,
    seeds_needed,
    welch_power,
)
from .win_rate import TIE_TOLERANCE, outcome_score, paired_difference, win_rate_summary

__all__ = [
    "DEFAULT_RESAMPLES",
    "LC_MAX_ITER",
    "MIN_SEEDS",
    "POWER_METHOD",
    "TIE_TOLERANCE",
    "Z95",
    "bootstrap_ci",
    "counts_of",
    "lc_bootstrap_estimates",
    "length_controlled_win_rate",
    "mean_with_ci",
    "min_detectable_effect",
    "normal_isf",
    "normal_sf",
    "offset_interval",
    "outcome_score",
    "paired_difference",
    "power_analysis",
    "power_by_seeds",
    "resample_counts",
    "satterthwaite_df",
    "seeds_needed",
    "t_interval",
    "t_quantile",
    "welch_interval",
    "welch_power",
    "wilson_interval",
    "win_rate_summary",
]
