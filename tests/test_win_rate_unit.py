"""A win rate and its interval come from the same unit, the prompt: each prompt's judged
pairs are averaged first, the estimate is the mean over prompts and the bootstrap
resamples prompts. Averaging over pairs (as before) weighs a prompt by how many of its
pairs the judge answered, so with several samples per prompt and judge failures the
interval could exclude its own estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trl_plus.eval.stats import length_controlled_win_rate, outcome_score, win_rate_summary


def random_case(rng):
    """Prompts of varying difficulty, several samples each, a judge that fails on some
    pairs, more often on prompts the candidate wins (or loses), so that the number of
    judged pairs per prompt is tied to the outcome."""
    n_prompts = int(rng.integers(2, 40))
    samples = int(rng.integers(2, 9))
    skill = rng.beta(0.7, 0.7, size=n_prompts)
    fail = rng.uniform(0, 0.8) * (skill if rng.random() < 0.5 else 1 - skill)
    probs, ids = [], []
    for i in range(n_prompts):
        for _ in range(samples):
            ids.append(f"p{i}")
            if rng.random() < fail[i]:
                probs.append(None)
            elif rng.random() < 0.5:  # a soft judge
                probs.append(float(np.clip(skill[i] + rng.normal(0, 0.3), 0, 1)))
            else:  # a hard one, with ties
                probs.append(float(rng.choice([0.0, 0.5, 1.0], p=[(1 - skill[i]) * 0.9, 0.1, skill[i] * 0.9])))
    if all(p is None for p in probs):
        probs[0] = 1.0
    lengths = rng.integers(1, 60, size=len(probs)).tolist()
    ref_lengths = rng.integers(1, 60, size=len(probs)).tolist()
    return probs, ids, lengths, ref_lengths


def per_prompt_means(values, ids):
    groups: dict = {}
    for v, g in zip(values, ids):
        if v is not None:
            groups.setdefault(g, []).append(v)
    return {g: sum(v) / len(v) for g, v in groups.items()}


def test_the_interval_contains_its_estimate_in_many_random_cases():
    rng = np.random.default_rng(0)
    for case in range(300):
        probs, ids, lengths, ref_lengths = random_case(rng)
        out = win_rate_summary(probs, ids, lengths, ref_lengths, n_resamples=400, seed=case, lc_resamples=100)
        lo, hi = out["win_rate_ci"]
        assert lo <= out["win_rate"] <= hi, (case, out["win_rate"], lo, hi)
        lo, hi = out["soft_win_rate_ci"]
        assert lo <= out["soft_win_rate"] <= hi, (case, out["soft_win_rate"], lo, hi)
        # the estimate is the mean of the per-prompt scores the interval resamples
        scores = per_prompt_means([None if p is None else outcome_score(p) for p in probs], ids)
        assert out["per_prompt"] == pytest.approx(scores)
        assert out["win_rate"] == pytest.approx(sum(scores.values()) / len(scores), abs=1e-12)
        soft = per_prompt_means(probs, ids)
        assert out["soft_win_rate"] == pytest.approx(sum(soft.values()) / len(soft), abs=1e-12)
        ties = per_prompt_means([None if p is None else float(outcome_score(p) == 0.5) for p in probs], ids)
        assert out["tie_rate"] == pytest.approx(sum(ties.values()) / len(ties), abs=1e-12)
        assert out["prompts_judged"] == len(scores)
        assert out["failed"] == sum(p is None for p in probs) and out["judged"] + out["failed"] == len(probs)
        assert all(math.isfinite(v) for v in out["lc_win_rate_ci"])


def test_a_case_where_the_pair_average_falls_outside_the_prompt_interval():
    # 10 prompts the candidate loses on all 8 samples; 10 it wins, where the judge answered
    # only 1 of 8. Per pair: 10 / 90 = 0.11; per prompt: 0.5, with an interval near [0.3, 0.7].
    probs, ids = [], []
    for i in range(10):
        probs += [0.0] * 8
        ids += [i] * 8
    for i in range(10, 20):
        probs += [1.0] + [None] * 7
        ids += [i] * 8
    out = win_rate_summary(probs, ids, [5] * len(probs), [5] * len(probs), n_resamples=2000, seed=0)
    lo, hi = out["win_rate_ci"]
    assert out["win_rate"] == pytest.approx(0.5) and out["soft_win_rate"] == pytest.approx(0.5)
    assert lo <= 0.5 <= hi and lo > 10 / 90  # the old pair average would lie outside
    assert (out["wins"], out["losses"], out["failed"], out["prompts_judged"]) == (10, 80, 70, 20)
    # no length difference to control for: the length-controlled rate is the same per-prompt rate
    assert out["lc_win_rate"] == pytest.approx(0.5)


def test_one_sample_per_prompt_is_unchanged():
    probs = [1.0, 0.0, 0.5, None, 0.9, None]
    out = win_rate_summary(probs, list(range(6)), [3] * 6, [3] * 6, n_resamples=1000)
    assert out["win_rate"] == pytest.approx(2.5 / 4) and out["soft_win_rate"] == pytest.approx(2.4 / 4)
    assert out["tie_rate"] == pytest.approx(0.25)


def test_length_controlled_fit_weighs_prompts_equally():
    rng = np.random.default_rng(5)
    # prompt groups of unequal size: duplicating a prompt's pairs k times with weight 1/k
    # is the same fit as giving it its pairs once
    scores = rng.choice([0.0, 0.5, 1.0], size=30)
    diffs = rng.normal(0, 10, size=30)
    once = length_controlled_win_rate(scores, diffs)
    repeated = np.repeat(np.arange(30), 3)
    tripled = length_controlled_win_rate(scores[repeated], diffs[repeated], np.full(90, 1 / 3))
    assert tripled == pytest.approx(once, abs=1e-6)
    # in win_rate_summary, a prompt with more judged pairs does not weigh more
    probs = [float(s) for s in scores[repeated]] + [1.0] * 12
    ids = [int(i) for i in repeated] + [99] * 12
    lens = [float(d) for d in diffs[repeated]] + [40.0] * 12
    out = win_rate_summary(probs, ids, lens, [0.0] * len(probs), n_resamples=200, lc_resamples=200)
    weights = [1 / 3] * 90 + [1 / 12] * 12
    assert out["lc_win_rate"] == pytest.approx(
        length_controlled_win_rate([outcome_score(p) for p in probs], lens, weights), abs=1e-9)
    assert out["lc_win_rate"] == pytest.approx(
        length_controlled_win_rate(list(scores) + [1.0], list(diffs) + [40.0]), abs=1e-5)
