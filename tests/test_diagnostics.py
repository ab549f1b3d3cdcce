"""The report's diagnostics on numbers whose answers are known: over-optimisation on curves
of the Gao form, best-of-n on simulated scores, power against textbook values, and data
quality on a handmade set of pairs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trl_plus.pipeline import diagnostic_plots as plots
from trl_plus.pipeline import diagnostics as diag

SFT = {"gold": 0.1, "proxy": 0.5}
KLS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def _gao_run(name, alpha, beta, proxy_slope=0.3, kls=KLS, method="ppo"):
    points = []
    for step, kl in enumerate(kls, 1):
        d = math.sqrt(kl)
        points.append({"step": 10 * step, "kl": kl, "gold": SFT["gold"] + d * (alpha - beta * math.log(d)),
                       "proxy": SFT["proxy"] + proxy_slope * d})
    return {"run": name, "method": method, "points": points}


def _plain(obj) -> bool:
    """JSON without numpy scalars or NaN."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    if isinstance(obj, float):
        return type(obj) is float and math.isfinite(obj)
    return obj is None or type(obj) in (int, bool, str)


# --- over-optimisation --------------------------------------------------------------------------


def test_overoptimisation_flags_gold_peaking_while_proxy_rises_and_recovers_the_fit():
    # alpha 1, beta 0.5: gold peaks at d* = e (KL e^2 = 7.39) and falls after; the proxy rises.
    peaked = _gao_run("ppo/s0", alpha=1.0, beta=0.5)
    rising = _gao_run("dpo/s0", alpha=0.3, beta=-0.05, method="dpo")
    result = diag.overoptimisation([peaked, rising], SFT)
    assert _plain(result) and json.loads(json.dumps(result)) == result
    bad, good = result["runs"]
    assert bad["overoptimised"] and not good["overoptimised"] and result["any_overoptimised"]
    assert bad["gold_fit"]["alpha"] == pytest.approx(1.0, abs=1e-6)
    assert bad["gold_fit"]["beta"] == pytest.approx(0.5, abs=1e-6)
    assert good["gold_fit"]["alpha"] == pytest.approx(0.3, abs=1e-6)
    assert good["gold_fit"]["beta"] == pytest.approx(-0.05, abs=1e-6)
    assert bad["peak_kl"] == pytest.approx(math.e ** 2, rel=1e-6)
    assert bad["peak_gold"] == pytest.approx(SFT["gold"] + 0.5 * math.e, rel=1e-6)
    assert good["peak_kl"] is None  # beta <= 0: the fitted curve never turns down
    # The largest fall: from the best checkpoint (KL 8) to the last (KL 32).
    assert (bad["drop"]["from_kl"], bad["drop"]["to_kl"]) == (8.0, 32.0)
    assert "fell" in bad["note"] and "over-optimisation" in bad["note"] and "KL 8.0 and 32.0" in bad["note"]
    assert "no over-optimisation" in good["note"]
    assert "ppo/s0" in result["text"] and "dpo/s0" not in result["text"]


def test_overoptimisation_needs_the_proxy_to_rise_and_a_fall_beyond_noise():
    # Gold falls, but so does the proxy: the reward model saw it too, no over-optimisation.
    both_fall = _gao_run("a", alpha=1.0, beta=0.5, proxy_slope=-0.3)
    # A fall of 0.005, under the default tolerance of 0.01.
    flat = {"run": "b", "method": "ppo", "points": [{"step": 1, "kl": 1.0, "gold": 0.2, "proxy": 1.0},
                                                    {"step": 2, "kl": 2.0, "gold": 0.195, "proxy": 1.5}]}
    result = diag.overoptimisation([both_fall, flat], SFT)
    assert [r["overoptimised"] for r in result["runs"]] == [False, False]
    # The same fall counts with a tighter tolerance, and standard errors replace the tolerance.
    assert diag.overoptimisation([flat], SFT, tol=0.001)["runs"][0]["overoptimised"]
    noisy = {**flat, "points": [{**p, "gold_stderr": 0.001} for p in flat["points"]]}
    assert diag.overoptimisation([noisy], SFT)["runs"][0]["overoptimised"]  # 0.005 > 1.96 * 0.0014
    noisier = {**flat, "points": [{**p, "gold_stderr": 0.05} for p in flat["points"]]}
    assert not diag.overoptimisation([noisier], SFT, tol=0.0)["runs"][0]["overoptimised"]


def test_overoptimisation_against_the_sft_model_and_with_missing_kl():
    # One checkpoint below SFT while the proxy rose: the fall is measured from the SFT model.
    run = {"run": "r", "method": "ppo", "points": [{"step": 1, "kl": None, "gold": 9.0, "proxy": 9.0},
                                                   {"step": 2, "kl": 3.0, "gold": 0.0, "proxy": 0.9}]}
    out = diag.overoptimisation([run], SFT)["runs"][0]
    assert out["checkpoints"] == 1 and out["gold_fit"] is None  # one point with d > 0 cannot fit two parameters
    assert out["overoptimised"] and "between the SFT model (KL 0) and KL 3.0" in out["note"]
    # Without the SFT model gains are measured from 0 and nothing precedes the first checkpoint.
    alone = diag.overoptimisation([run])["runs"][0]
    assert not alone["overoptimised"] and "too few" in alone["note"]
    assert diag.overoptimisation([])["any_overoptimised"] is False


# --- best-of-n ----------------------------------------------------------------------------------


def test_best_of_n_kl_formula_is_the_upper_bound():
    for n in (1, 2, 4, 8, 16, 100):
        assert diag.best_of_n_kl(n) == math.log(n) - (n - 1) / n
    assert diag.best_of_n_kl(1) == 0.0
    assert diag.best_of_n_kl(2) == pytest.approx(0.19314718, abs=1e-8)
    with pytest.raises(ValueError):
        diag.best_of_n_kl(0)


def test_best_of_n_gold_rises_with_a_correlated_proxy_and_not_with_an_independent_one():
    rng = np.random.default_rng(0)
    gold = rng.normal(size=(2000, 16))
    correlated = gold + rng.normal(scale=0.5, size=gold.shape)
    independent = rng.normal(size=gold.shape)
    up = diag.best_of_n(gold.tolist(), correlated.tolist())
    flat = diag.best_of_n(gold.tolist(), independent.tolist())
    assert _plain(up) and up["ns"] == [1, 2, 4, 8, 16]
    golds = [p["gold"] for p in up["points"]]
    assert all(b > a for a, b in zip(golds, golds[1:]))
    assert golds[-1] - golds[0] > 1.0  # E[max of 16 normals] * corr 0.89 is about 1.58
    # Continuous scores have no ties: the estimate is the formula, which is exact here.
    assert [p["kl"] for p in up["points"]] == pytest.approx([diag.best_of_n_kl(n) for n in up["ns"]], abs=1e-12)
    assert [p["kl_upper_bound"] for p in up["points"]] == [diag.best_of_n_kl(n) for n in up["ns"]]
    for p in flat["points"]:
        assert abs(p["gold"]) < 4 / math.sqrt(2000)  # the picks are random draws of gold
        assert p["prompts"] == 2000 and len(p["gold_per_prompt"]) == 2000
    # best-of-1, rank-weighted over all 16 samples, is each prompt's mean; best-of-16 its top pick.
    assert up["points"][0]["gold_per_prompt"] == pytest.approx(gold.mean(axis=1).tolist())
    assert up["points"][-1]["gold_per_prompt"] == pytest.approx(gold[np.arange(2000), correlated.argmax(axis=1)].tolist())


def test_best_of_n_handles_failed_samples_and_too_few_samples():
    gold = [[0.1, 0.9, 0.5, None],
            [0.2, 0.3, 0.4, 0.8],
            [0.7, 0.6, 0.0, 0.1]]
    proxy = [[1.0, 3.0, 2.0, 9.0],   # the top pick's gold failed
             [None, None, 5.0, 1.0],  # two failed proxy scores: a pool of two samples
             [2.0, 2.0, 1.0, 0.0]]    # a proxy tie between the two best
    r = diag.best_of_n(gold, proxy, ns=(1, 2, 4, 8))
    assert r["ns"] == [1, 2, 4] and "n = 8 left out" in r["text"] and "only 4 samples" in r["text"]
    one, two, four = r["points"]
    # n = 1: each prompt's mean over its pool (a failed gold reward left out of the mean).
    assert one["gold_per_prompt"] == pytest.approx([0.5, 0.6, 0.35]) and one["prompts"] == 3
    # n = 2, prompt 1 (ranks by proxy 0.1 < 0.5 < 0.9 < None-gold): weights C(i-1, 1) / C(4, 2) =
    # 0, 1/6, 2/6, 3/6; the last has no gold, so the rest is renormalised: (0.5 + 2 * 0.9) / 3.
    # Prompt 2's pool has two samples: best-of-2 keeps the higher proxy, gold 0.4. Prompt 3: the
    # tied pair at the top shares C(4, 2) - C(2, 2) = 5 of 6 subsets, 0 and 1.0 share C(2, 2) - 0 = 1.
    assert two["gold_per_prompt"] == pytest.approx([(0.5 + 2 * 0.9) / 3, 0.4, (5 / 6) * 0.65 + (1 / 6) * 0.0])
    assert two["gold_missing"] == 1 and two["prompts"] == 3
    # n = 4: prompt 1's only candidate has no gold (None), prompt 2's pool is too small (skipped).
    assert four["gold_per_prompt"] == [None, None, pytest.approx(0.65)]
    assert four["prompts"] == 2 and four["gold_missing"] == 1
    assert four["gold"] == pytest.approx(0.65) and four["proxy"] == pytest.approx((9 + 2) / 2)
    with pytest.raises(ValueError):
        diag.best_of_n([[1, 2], [1]], [[1, 2], [1, 2]])
    with pytest.raises(ValueError):
        diag.best_of_n([[1, 2]], [[1, 2], [1, 2]])


# --- power --------------------------------------------------------------------------------------


def test_power_curve_matches_textbook_values_and_rises_with_seeds():
    from trl_plus.eval import power_by_seeds

    curve = power_by_seeds(sd=1.0, difference=1.0)
    power = {c["seeds"]: c["power"] for c in curve}
    assert list(power) == list(range(2, 21))
    assert power[17] == pytest.approx(0.807, abs=0.01)  # Cohen: d = 1 needs 17 per group for 80%
    assert power[10] == pytest.approx(0.562, abs=0.01)
    assert all(b > a for a, b in zip(curve, curve[1:]) for a, b in [(a["power"], b["power"])])
    assert next(c["seeds"] for c in curve if c["power"] >= 0.8) == 17
    assert power_by_seeds(sd=2.0, difference=-2.0) == curve  # only the size counts
    assert power_by_seeds(0, 1.0) == [] and power_by_seeds(None, 1.0) == []
    # no difference: the size of Welch's test, a little under alpha with few seeds
    assert power_by_seeds(1.0, 0.0, seeds=[5])[0]["power"] == pytest.approx(0.05, abs=0.01)


# --- preference-data quality --------------------------------------------------------------------

ROWS = [
    {"prompt": "a", "chosen": "one two three", "rejected": "one", "chosen_reward": 1.0, "rejected_reward": 0.0},
    {"prompt": "a ", "chosen": "x y", "rejected": "x", "chosen_reward": 0.5, "rejected_reward": 0.7},
    {"prompt": "b", "chosen": "same  text", "rejected": "same text", "chosen_reward": 0.2, "rejected_reward": 0.2},
    {"prompt": "c", "chosen": "p q r", "rejected": "p", "chosen_reward": 2.0, "rejected_reward": 1.0},
    {"prompt": "d", "chosen": "short", "rejected": "much longer one", "chosen_reward": 1.5, "rejected_reward": 1.0},
]


def test_preference_quality_counts_a_handmade_set_exactly():
    r = diag.preference_quality(ROWS)
    assert _plain(r)
    assert r["pairs"] == 5
    assert r["chosen_longer_share"] == 0.6 and r["equal_length_share"] == 0.2 and r["rejected_longer_share"] == 0.2
    assert r["mean_length_difference"]["words"] == pytest.approx((2 + 1 + 0 + 2 - 2) / 5)
    assert r["mean_length_difference"]["characters"] == pytest.approx((10 + 2 + 1 + 4 - 10) / 5)
    assert r["duplicate_prompts"] == {"prompts": 1, "rows_involved": 2, "rows": [0, 1]}
    assert r["identical_pairs"] == {"count": 1, "rows": [2]}
    gm = r["gold_margin"]
    assert gm["pairs"] == 5 and gm["mean"] == pytest.approx((1.0 - 0.2 + 0 + 1.0 + 0.5) / 5)
    assert gm["non_positive"] == 2 and gm["non_positive_share"] == 0.4
    assert gm["quantiles"]["0.5"] == pytest.approx(0.5) and sum(gm["histogram"]["counts"]) == 5
    assert sum(r["length_difference_histogram"]["counts"]) == 5
    # 60% is not above the 60% threshold: no length warning; the others are there.
    assert not any("length bias" in w for w in r["warnings"])
    assert any("identical" in w for w in r["warnings"]) and any("more than one pair" in w for w in r["warnings"])
    assert any("gold margin <= 0" in w for w in r["warnings"])


def test_preference_quality_warns_of_a_length_bias_above_the_threshold():
    rows = [{"prompt": str(i), "chosen": "a b c", "rejected": "a"} for i in range(18)]
    rows += [{"prompt": f"r{i}", "chosen": "a", "rejected": "a b"} for i in range(7)]
    r = diag.preference_quality(rows)
    assert r["chosen_longer_share"] == 0.72 and r["gold_margin"] is None
    assert "chosen is longer than rejected in 72% of pairs: a length bias that DPO learns" in r["warnings"]
    assert not any("length bias" in w for w in diag.preference_quality(rows, length_bias_threshold=0.75)["warnings"])
    # Characters can disagree with words: "aaaa" has more characters but fewer words.
    chars = diag.preference_quality([{"prompt": "p", "chosen": "aaaaaaa", "rejected": "b c"}], length_unit="characters")
    assert chars["chosen_longer_share"] == 1.0 and chars["length_unit"] == "characters"


def test_reward_model_gold_agreement_and_its_wilson_interval():
    # 10 pairs with a gold difference: 8 agree, one reward-model tie (counts against), one
    # disagreement; plus a gold tie and a missing score, both left out.
    rm_c = [1, 1, 1, 1, 1, 0, 0, 0, 0.5, 0, 1, None]
    rm_r = [0, 0, 0, 0, 0, 1, 1, 1, 0.5, 0.5, 0, 0]
    gold_c = [1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 3, 1]
    gold_r = [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 3, 0]
    held = {"rm_chosen": rm_c, "rm_rejected": rm_r, "gold_chosen": gold_c, "gold_rejected": gold_r}
    ag = diag.preference_quality(ROWS, heldout=held)["rm_gold_agreement"]
    assert (ag["agree"], ag["pairs"], ag["gold_ties"], ag["missing"]) == (8, 10, 1, 1)
    assert ag["agreement"] == 0.8
    assert ag["ci"] == pytest.approx([0.4902, 0.9433], abs=1e-4)  # Wilson 95% for 8 of 10
    assert diag.wilson_interval(0, 0) is None
    assert diag.wilson_interval(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    with pytest.raises(ValueError):
        diag.preference_quality(ROWS, heldout={**held, "gold_rejected": gold_r[:-1]})


def test_preference_quality_of_no_pairs_is_none_not_nan():
    r = diag.preference_quality([])
    assert _plain(r) and r["pairs"] == 0 and r["chosen_longer_share"] is None and r["warnings"]


# --- figures ------------------------------------------------------------------------------------


def _png(path) -> bool:
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_plot_writes_a_png(tmp_path):
    runs = [_gao_run("ppo/s0", 1.0, 0.5), _gao_run("dpo/s0", 0.3, -0.05, method="dpo")]
    over = diag.overoptimisation(runs, SFT)
    rng = np.random.default_rng(1)
    gold = rng.normal(size=(50, 8))
    bon = diag.best_of_n(gold.tolist(), (gold + rng.normal(size=gold.shape)).tolist())
    from trl_plus.eval import power_by_seeds

    curve = power_by_seeds(0.05, 0.04)
    quality = diag.preference_quality(ROWS)
    written = [
        plots.overoptimisation_plot(over, runs, SFT, tmp_path / "over.png"),
        plots.overoptimisation_plot(diag.overoptimisation(runs), runs, None, tmp_path / "over_nosft.png"),
        plots.best_of_n_plot(bon, tmp_path / "bon.png", sft_gold=0.0),
        plots.power_plot(curve, tmp_path / "power.png", current_seeds=3, needed=next((c["seeds"] for c in curve if c["power"] >= 0.8), None)),
        plots.power_plot({"ppo": curve, "dpo": power_by_seeds(0.1, 0.04)}, tmp_path / "power2.png"),
        plots.power_plot([], tmp_path / "power_empty.png"),
        plots.preference_quality_plot(quality, tmp_path / "quality.png"),
        plots.preference_quality_plot(diag.preference_quality([{"prompt": "p", "chosen": "a b", "rejected": "a"}]),
                                      tmp_path / "quality_nogold.png"),
    ]
    assert all(_png(p) for p in written)
