"""Diagnostics behind four report sections, as pure functions over numbers the caller has.

- ``overoptimisation`` (:mod:`.overoptimisation`, with the fit of :mod:`.gao`): does a run's
  gold reward fall while the reward model's score keeps rising (reward over-optimisation),
  with the Gao et al. (2022) fit of gold against sqrt(KL).
- ``best_of_n`` (:mod:`.best_of_n`): the best-of-n baseline on the SFT model's samples, its
  gold reward rank-weighted over all samples and its KL estimated with ties and duplicates
  counted; ``best_of_n_against`` (:mod:`.against_best_of_n`): each method's frontier
  against it.
- ``preference_quality`` (:mod:`.preference`): length bias, duplicates, identical pairs and
  gold margins of the training pairs, and the reward model's agreement with the gold reward
  on held-out pairs.

These are domain analyses; the intervals and tests they use (t intervals, z-tests, the
Wilson interval, Holm's correction) are :mod:`trl_plus.eval.stats`' and
:mod:`trl_plus.eval.multiplicity`'.

Nothing here loads a model or imports torch: the caller passes the scores in. Every result
is plain JSON (floats, ints, lists, dicts, strings, None); a value that cannot be computed is
None, never NaN.
"""

from __future__ import annotations

from ...eval.stats import wilson_interval  # the interval preference_quality reports, named here as before
from .against_best_of_n import best_of_n_against
from .best_of_n import (
    BON_GOLD_METHOD,
    BON_KL_METHOD,
    DEFAULT_NS,
    best_of_n,
    best_of_n_kl,
    best_of_n_kl_empirical,
    best_of_n_kl_ties,
    best_of_n_weights,
)
from .gao import PEAK_REACH, fit_gao, gao_curve, gao_peak
from .overoptimisation import OVEROPT_ALPHA, overoptimisation
from .preference import GOLD_MARGIN_QUANTILES, MAX_LISTED_ROWS, preference_quality

__all__ = [
    "BON_GOLD_METHOD",
    "BON_KL_METHOD",
    "DEFAULT_NS",
    "GOLD_MARGIN_QUANTILES",
    "MAX_LISTED_ROWS",
    "OVEROPT_ALPHA",
    "PEAK_REACH",
    "best_of_n",
    "best_of_n_against",
    "best_of_n_kl",
    "best_of_n_kl_empirical",
    "best_of_n_kl_ties",
    "best_of_n_weights",
    "fit_gao",
    "gao_curve",
    "gao_peak",
    "overoptimisation",
    "preference_quality",
    "wilson_interval",
]
