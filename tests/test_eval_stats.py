"""Win-rate statistics against independent computations on fixed data."""

import math

import numpy as np
import pytest
from scipy import optimize, stats as sps

from trl_plus.eval.stats import (
    bootstrap_ci,
    counts_of,
    lc_bootstrap_estimates,
    length_controlled_win_rate,
    outcome_score,
    paired_difference,
    resample_counts,
    win_rate_summary,
)
from trl_plus.eval.stats.length_control import _lc_bootstrap


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


def sklearn_lc(scores, lengths):
    """The length-controlled win rate as one scikit-learn fit of the duplicated rows (a
    tie as half a win and half a loss), standardised within the data it is given."""
    from sklearn.linear_model import LogisticRegression

    y, d = np.asarray(scores, dtype=float), np.asarray(lengths, dtype=float)
    x = (d / d.std()).reshape(-1, 1)
    model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000, tol=1e-10)
    model.fit(np.vstack([x, x]), np.concatenate([np.ones_like(y), np.zeros_like(y)]),
              sample_weight=np.concatenate([y, 1 - y]))
    return 1 / (1 + math.exp(-model.intercept_[0]))


def grouped_data(n_prompts=60, per_prompt=2, seed=4):
    scores, lengths = fixed_data(n_prompts * per_prompt, seed)
    return scores, lengths.round(), [i // per_prompt for i in range(n_prompts * per_prompt)]


def test_lc_point_estimate_agrees_with_scikit_learn():
    for seed in range(3):
        scores, lengths = fixed_data(seed=seed)
        for d in (lengths, lengths + 15, lengths.round() * 3):
            assert length_controlled_win_rate(scores, d) == pytest.approx(sklearn_lc(scores, d), abs=1e-6)


def test_lc_bootstrap_fits_every_resample_as_scikit_learn_does():
    scores, lengths, ids = grouped_data()
    picks = np.random.default_rng(7).integers(0, 60, size=(150, 60))
    ours, fallback = lc_bootstrap_estimates(scores, lengths, ids, counts=counts_of(picks, 60))
    assert not fallback.any()
    members = [[i for i, g in enumerate(ids) if g == k] for k in range(60)]
    for r, pick in enumerate(picks):  # the resampled rows, built out as a resample used to be
        rows = np.concatenate([members[j] for j in pick])
        assert ours[r] == pytest.approx(sklearn_lc(scores[rows], lengths[rows]), abs=1e-5), r


def test_lc_ci_is_the_one_of_per_resample_refits():
    scores, lengths, ids = grouped_data(n_prompts=80, per_prompt=1, seed=5)
    # the resamples are the ones drawn one at a time from the same generator
    rng = np.random.default_rng(11)
    picks = np.stack([rng.integers(0, 80, size=80) for _ in range(300)])
    assert (resample_counts(80, 300, 11) == counts_of(picks, 80)).all()
    refits = [sklearn_lc(scores[p], lengths[p]) for p in picks]
    lo, hi = _lc_bootstrap(scores, lengths, ids, 300, 11, 0.95)
    ref_lo, ref_hi = np.quantile(refits, [0.025, 0.975])
    assert lo == pytest.approx(ref_lo, abs=1e-4) and hi == pytest.approx(ref_hi, abs=1e-4)
    ours, _ = lc_bootstrap_estimates(scores, lengths, ids, n_resamples=300, seed=11)
    assert np.quantile(ours, [0.1, 0.5, 0.9]) == pytest.approx(np.quantile(refits, [0.1, 0.5, 0.9]), abs=1e-4)


def test_lc_degenerate_fits_fall_back_to_the_plain_win_rate():
    d = np.array([-3.0, -1.0, 0.0, 2.0, 5.0])
    assert length_controlled_win_rate([1, 1, 1, 1, 1], d) == 1.0
    assert length_controlled_win_rate([0, 0, 0, 0, 0], d) == 0.0
    assert length_controlled_win_rate([0.5] * 5, d) == pytest.approx(0.5)
    assert length_controlled_win_rate([1, 0, 0.5, 1, 0], [4.0] * 5) == pytest.approx(0.5)  # no length spread
    # separated by length (wins longer), also with ties at the threshold: no finite optimum
    assert length_controlled_win_rate([0, 0, 1, 1, 1], d) == pytest.approx(0.6)
    assert length_controlled_win_rate([1, 1, 0, 0, 0], d) == pytest.approx(0.4)
    assert length_controlled_win_rate([0, 0.5, 0.5, 1, 1], [-3.0, 0.0, 0.0, 2.0, 5.0]) == pytest.approx(0.6)
    # one loss among the long ones: overlap, a finite fit
    overlapping = [0, 0, 1, 0, 1, 1]
    assert length_controlled_win_rate(overlapping, [-3.0, -1.0, 0.0, 1.0, 2.0, 5.0]) == pytest.approx(
        sklearn_lc(overlapping, [-3.0, -1.0, 0.0, 1.0, 2.0, 5.0]), abs=1e-6)
    assert math.isnan(length_controlled_win_rate([], []))


def test_lc_bootstrap_on_tiny_data_stays_finite():
    scores = np.array([0, 0, 1, 0, 1, 1, 0.5, 1.0])
    lengths = np.array([-4.0, -2.0, -1.0, 0.0, 1.0, 3.0, 3.0, 6.0])
    ids = list(range(8))
    est, fallback = lc_bootstrap_estimates(scores, lengths, ids, n_resamples=2000, seed=0)
    assert np.isfinite(est).all() and ((0 <= est) & (est <= 1)).all()
    counts = resample_counts(8, 2000, 0)
    plain = counts @ scores / 8
    assert 0 < fallback.sum() < 2000
    assert est[fallback] == pytest.approx(plain[fallback])
    probabilities = np.where(scores == 1, 0.9, np.where(scores == 0, 0.1, 0.5))
    out = win_rate_summary(list(probabilities), ids, lengths, [0] * 8, n_resamples=1000)
    assert out["lc_fallback_resamples"] > 0 and all(math.isfinite(v) for v in out["lc_win_rate_ci"])
