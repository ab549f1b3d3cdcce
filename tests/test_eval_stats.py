"""Win-rate statistics against independent computations on fixed data."""

import math

import numpy as np
import pytest
from scipy import optimize, stats as sps

from trl_plus.eval.stats import (
    bootstrap_ci,
    length_controlled_win_rate,
    outcome_score,
    paired_difference,
    win_rate_summary,
)


def fixed_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.normal(0, 20, size=n)
    # longer completions win more often: a length bias the LC win rate should remove
    p_win = 1 / (1 + np.exp(-(0.2 + lengths / 20)))
    u = rng.random(n)
    scores = np.where(u < p_win * 0.9, 1.0, np.where(u < p_win * 0.9 + 0.1, 0.5, 0.0))
    return scores, lengths


def test_bootstrap_ci_agrees_with_scipy():
    scores, _ = fixed_data()
    ours = bootstrap_ci(scores, n_resamples=4000, seed=1)
    ref = sps.bootstrap((scores,), np.mean, n_resamples=4000, method="percentile", random_state=2).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.01)
    assert ours[1] == pytest.approx(ref.high, abs=0.01)
    # and with a plain normal-approximation interval
    se = scores.std(ddof=1) / math.sqrt(len(scores))
    assert ours[0] == pytest.approx(scores.mean() - 1.96 * se, abs=0.012)


def test_lc_win_rate_agrees_with_direct_likelihood_fit():
    scores, lengths = fixed_data()
    ours = length_controlled_win_rate(scores, lengths)
    x = lengths / lengths.std()

    def nll(theta):  # soft-label logistic log-loss, minimised independently of scikit-learn
        z = theta[0] + theta[1] * x
        return np.sum(np.logaddexp(0, -z) * scores + np.logaddexp(0, z) * (1 - scores))

    theta = optimize.minimize(nll, np.zeros(2), method="BFGS").x
    assert ours == pytest.approx(1 / (1 + math.exp(-theta[0])), abs=1e-4)
    # the length bias favours the candidate (mean length difference > 0 here is ~0), and
    # the LC estimate differs from the raw win rate when lengths are unbalanced
    shifted = lengths + 15
    assert length_controlled_win_rate(scores, shifted) < scores.mean()


def test_summary_counts_failed_pairs_and_ties():
    probs = [1.0, 0.0, 0.5, None, 0.9, None]
    out = win_rate_summary(probs, list(range(6)), [3] * 6, [3] * 6, n_resamples=1000)
    assert (out["wins"], out["ties"], out["losses"], out["failed"], out["judged"]) == (2, 1, 1, 2, 4)
    assert out["win_rate"] == pytest.approx(2.5 / 4)
    assert out["soft_win_rate"] == pytest.approx((1 + 0 + 0.5 + 0.9) / 4)
    assert out["tie_rate"] == pytest.approx(0.25)
    assert outcome_score(0.5) == 0.5


def test_paired_difference_ci():
    rng = np.random.default_rng(3)
    a = {str(i): float(v) for i, v in enumerate(rng.choice([0, 0.5, 1], size=200, p=[0.2, 0.1, 0.7]))}
    b = {k: (v if rng.random() < 0.7 else 0.0) for k, v in a.items()}
    out = paired_difference(a, b, n_resamples=2000, seed=0)
    d = np.array([a[k] - b[k] for k in a])
    assert out["difference"] == pytest.approx(d.mean())
    ref = sps.bootstrap((d,), np.mean, n_resamples=2000, method="percentile", random_state=0).confidence_interval
    assert out["ci"][0] == pytest.approx(ref.low, abs=0.015)
    assert out["significant"] and out["ci"][0] > 0
