"""trl_plus.eval.stats is the one home of the t-intervals and of power: each checked against
scipy's own computation, the power curve against the planned seed count, and no t quantile
or scipy statistics computed anywhere else in the package."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from trl_plus.eval.stats import (
    offset_interval,
    power_analysis,
    power_by_seeds,
    seeds_needed,
    t_interval,
    welch_interval,
    welch_power,
)

ROOT = Path(__file__).resolve().parents[1]


def test_t_interval_is_students():
    values = [0.31, 0.27, 0.4, 0.35, 0.22]
    iv = t_interval(values, confidence=0.9)
    sem = np.std(values, ddof=1) / math.sqrt(len(values))
    lo, hi = sps.t.interval(0.9, len(values) - 1, loc=np.mean(values), scale=sem)
    assert iv["ci"] == pytest.approx([lo, hi], rel=1e-12)
    assert iv["seeds"] == 5 and iv["sd"] == pytest.approx(np.std(values, ddof=1))
    assert t_interval([0.3]) == {"mean": 0.3, "ci": None, "seeds": 1}
    assert t_interval([]) == {"mean": None, "ci": None, "seeds": 0}


def test_welch_interval_is_scipys_welch_test():
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(0.3, 0.1, 4), rng.normal(0.1, 0.3, 6)
    diff, ci, df, p = welch_interval(xa, xb, 0.95)
    res = sps.ttest_ind(xa, xb, equal_var=False)
    assert p == pytest.approx(res.pvalue, rel=1e-10)
    assert ci == pytest.approx(list(res.confidence_interval(0.95)), rel=1e-10)
    assert diff == pytest.approx(xa.mean() - xb.mean())
    assert df == pytest.approx(res.df, rel=1e-10)
    # constant groups: the interval is the point
    assert welch_interval(np.array([1.0, 1.0]), np.array([0.0, 0.0])) == (1.0, [1.0, 1.0], 2.0, 0.0)


def test_offset_interval_reduces_to_a_one_sample_t_without_the_references_error():
    values = [0.5, 0.62, 0.41, 0.58]
    iv = offset_interval(values, 0.3, 0.0, 100, confidence=0.95)
    shifted = t_interval([v - 0.3 for v in values])
    assert iv["difference"] == pytest.approx(np.mean(values) - 0.3)
    assert iv["ci"] == pytest.approx(shifted["ci"], rel=1e-12)
    assert iv["df"] == pytest.approx(len(values) - 1)
    # the reference's own error adds in quadrature, with Welch-Satterthwaite degrees of freedom
    both = offset_interval(values, 0.3, 0.05, 100, confidence=0.95)
    v_seed, v_ref = np.var(values, ddof=1) / 4, 0.05**2
    assert both["df"] == pytest.approx((v_seed + v_ref) ** 2 / (v_seed**2 / 3 + v_ref**2 / 99))
    half = (both["ci"][1] - both["ci"][0]) / 2
    assert half == pytest.approx(sps.t.ppf(0.975, both["df"]) * math.sqrt(v_seed + v_ref))


@pytest.mark.parametrize("effect", [0.02, 0.05, 0.1])
def test_the_power_curve_crosses_the_target_at_the_planned_seed_count(effect):
    rng = np.random.default_rng(1)
    a, b = list(rng.normal(0.5, 0.04, 3)), list(rng.normal(0.48, 0.04, 3))
    plan = power_analysis(a, b, difference=effect)
    curve = power_by_seeds(plan["sd"], effect, seeds=range(2, 150))
    first = next(p["seeds"] for p in curve if p["power"] >= plan["power"])
    assert plan["seeds_needed"] == first == seeds_needed(effect / plan["sd"], plan["power"], plan["alpha"], 1000)
    assert plan["current_power"] == welch_power(effect / plan["sd"], 3, 3, 0.05)


def test_no_t_quantile_or_scipy_statistics_outside_the_stats_package():
    pattern = re.compile(r"\bt\.(ppf|isf|interval|cdf|sf)\(|\bscipy\b|\bNormalDist\b|\berfc\(")
    offenders = []
    for folder in ("trl_plus", "eval", "plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(ROOT / "eval" / "stats"):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
