"""compare_frontiers and power_analysis, checked on simulated experiments whose truth is known.

Simulation model (shared by the calibration and trap tests): a checkpoint at KL ``k`` of
seed ``s`` of a method has true gold reward ``truth(k) + offset_s (+ shift for method a)``,
where ``truth(k) = 0.5 * (1 - exp(-k / 2))`` is gently concave and ``offset_s ~ N(0, sd)``
is the seed's luck, shared by every checkpoint and run of that seed. Each of 256 prompts
adds a difficulty common to every checkpoint and an independent N(0, 0.3) score noise.
Method a sweeps two runs of four checkpoints per seed, method b one run of eight, over
the same KL span with similar checkpoint density, so interpolating between checkpoints
does not favour either method.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from trl_plus.errors import DataError
from trl_plus.eval import compare_frontiers, power_analysis

PROMPTS = 256
NOISE = 0.3
_steps = itertools.count(1)


def truth(kl):
    return 0.5 * (1 - np.exp(-np.asarray(kl) / 2))


def point(method, seed, kl, gold, *, run=None, step=None, **extra):
    """A point whose gold is a constant (a float) or a given list."""
    if not isinstance(gold, list):
        gold = [float(gold)] * 4
    return {"method": method, "seed": seed, "run": run or f"{method}-seed{seed}",
            "step": step if step is not None else next(_steps),
            "kl": kl, "gold": gold, **extra}


def flat(method, seed, value, kls=(0.5, 1.0, 2.0)):
    """A seed whose frontier is the constant ``value`` over ``kls`` (equal rewards: only the
    smallest KL would be on a strict Pareto set, so rewards rise by a hair)."""
    return [point(method, seed, k, value + 1e-12 * i) for i, k in enumerate(kls)]


def simulate(rng, seeds, *, shift=0.0, seed_sd=0.05, val=False, designs=None):
    difficulty = rng.normal(0, 0.5, PROMPTS)
    val_difficulty = rng.normal(0, 0.5, PROMPTS)
    points = []

    def add(method, seed, run, step, kl, mean):
        p = {"method": method, "seed": seed, "run": run, "step": step, "kl": float(kl),
             "gold": (mean + difficulty + rng.normal(0, NOISE, PROMPTS)).tolist()}
        if val:
            p["gold_val"] = (mean + val_difficulty + rng.normal(0, NOISE, PROMPTS)).tolist()
        points.append(p)

    add("sft", None, "sft", 0, 0.0, 0.0)
    designs = designs or {
        "a": [("a/kl_hi", [0.25, 0.5, 0.75, 1.0], 1.6), ("a/kl_lo", [0.375, 0.625, 0.875, 1.0], 3.2)],
        "b": [("b/beta", np.arange(1, 9) / 8, 3.2)],
    }
    for method, runs in designs.items():
        for seed in range(seeds):
            offset = rng.normal(0, seed_sd) + (shift if method == "a" else 0.0)
            for run, fractions, top in runs:
                top = top * np.exp(rng.normal(0, 0.1))
                kls = top * np.asarray(fractions) * np.exp(rng.normal(0, 0.05, len(fractions)))
                for step, kl in enumerate(kls):
                    add(method, seed, f"{run}-seed{seed}", 100 * (step + 1), kl, truth(kl) + offset)
    return points


# --- 1. matched KL, never best-under-budget ----------------------------------------------


def gao(kl, alpha, beta):
    d = np.sqrt(np.asarray(kl, dtype=float))
    return alpha * d - beta * d * np.log(np.where(d > 0, d, 1.0))


def test_every_checkpoint_of_every_run_enters_its_seed_fit_and_averages_are_exact():
    """Noise-free checkpoints on known curves: each seed's number is its curve's exact
    average over the compared range, the range runs from the larger median first KL to
    the smaller median last KL, and no checkpoint is left out of a fit."""
    origin = 0.1
    truths = {("ppo", 0): (0.3, 0.1), ("ppo", 1): (0.25, -0.05), ("ppo", 2): (0.35, 0.2),
              ("dpo", 0): (0.2, 0.0), ("dpo", 1): (0.3, 0.15)}
    spans = {("ppo", s): [(0.4, 0.9, 1.6), (0.3, 1.2, 2.4, 3.0)] for s in range(3)}
    spans.update({("dpo", 0): [(0.6, 2.5)], ("dpo", 1): [(0.5, 1.0, 2.2)]})
    pts = [point("sft", None, 0.0, origin, id="sft")]
    for (m, s), (al, be) in truths.items():
        for run, kls in enumerate(spans[(m, s)]):
            for k in kls:
                pts.append(point(m, s, k, float(origin + gao(k, al, be)), run=f"{m}{s}-r{run}", id=f"{m}{s}-r{run}-{k}"))
    pts.append(point("grpo", 0, 0.7, 9.0, id="other"))  # neither method: ignored
    r = compare_frontiers(pts, "ppo", "dpo")
    assert r["seeds"] == {"ppo": 3, "dpo": 2}
    assert r["frontier_points"]["ppo"][0] == ["sft"] + [f"ppo0-r{i}-{k}" for i, kls in enumerate(spans[("ppo", 0)]) for k in kls]
    assert r["kl_range"] == pytest.approx([max(0.3, np.median([0.6, 0.5])), min(3.0, np.median([2.5, 2.2]))])
    lo, hi = r["kl_range"]
    fine = np.linspace(lo, hi, 200_001)
    for (m, s), (al, be) in truths.items():
        assert r["fits"][m][s]["coef"] == pytest.approx([al, be], abs=1e-9)
        # dpo seed 1 stops at KL 2.2 < hi: past its last checkpoint it holds its best value.
        reach = r["fits"][m][s]["reach"]
        best = fine[fine <= reach][np.argmax(gao(fine[fine <= reach], al, be))]
        curve = np.where(fine > reach, gao(best, al, be), gao(fine, al, be))
        assert r["per_seed"][m][s] == pytest.approx(origin + curve.mean(), abs=1e-5)
    means = {m: np.mean(list(r["per_seed"][m].values())) for m in ("ppo", "dpo")}
    assert r["difference"] == pytest.approx(means["ppo"] - means["dpo"])
    assert len(r["grid"]) == len(r["curves"]["ppo"]) == 200
    assert r["grid"][0] == pytest.approx(lo) and r["grid"][-1] == pytest.approx(hi)
    mid = np.mean([origin + gao(1.5, *truths[("ppo", s)]) for s in range(3)])
    assert np.interp(1.5, r["grid"], r["curves"]["ppo"]) == pytest.approx(mid, abs=1e-4)
    assert np.mean([v for v in (np.interp(1.5, r["grid"], c) for c in r["seed_curves"]["ppo"].values())]) \
        == pytest.approx(mid, abs=1e-4)
    assert r["ahead"] and r["ahead"][0]["from"] == pytest.approx(lo) and r["ahead"][-1]["to"] == pytest.approx(hi)
    assert r["p_value"] is not None and 0 <= r["p_value"] <= 1


def test_several_sft_points_form_one_origin_and_ahead_marks_where_curves_cross():
    pts = [point("sft", None, 0.0, 0.0, id="sft-1"), point("sft", None, 0.0, 0.2, id="sft-2")]
    for s in (0, 1):
        for k in (0.25, 0.5, 2.0, 4.0):
            pts.append(point("a", s, k, float(0.1 + gao(k, 0.2, -0.2)), id=f"a{s}-{k}"))
            pts.append(point("b", s, k, float(0.1 + gao(k, 0.2, 0.0)), id=f"b{s}-{k}"))
    r = compare_frontiers(pts, "a", "b")
    assert r["frontier_points"]["a"][0][:2] == ["sft-1", "sft-2"]
    assert r["fits"]["a"][0]["origin"] == pytest.approx(0.1)
    # a minus b is 0.2 d log d: below 0 until d = 1 (KL 1), above after.
    assert [seg["leader"] for seg in r["ahead"]] == ["b", "a"]
    assert r["ahead"][0]["to"] == pytest.approx(1.0, abs=0.02) == r["ahead"][1]["from"]
    lo, hi = r["kl_range"]
    fine = np.linspace(lo, hi, 200_001)
    assert r["difference"] == pytest.approx((gao(fine, 0.2, -0.2) - gao(fine, 0.2, 0.0)).mean(), abs=1e-6)


def test_a_sweep_that_drifts_to_larger_kl_does_not_win():
    """Truth: b's curve is 0.05 above a's at every KL; a's checkpoints sit at KL 1-5, b's
    at 0.2-2.5, so the best checkpoint under a generous KL budget is a's."""
    rng = np.random.default_rng(7)
    designs = {"a": [("a/run", np.linspace(1.0, 5.0, 8) / 5.0, 5.0)],
               "b": [("b/run", np.linspace(0.2, 2.5, 8) / 2.5, 2.5)]}
    pts = simulate(rng, 3, shift=-0.05, seed_sd=0.01, designs=designs)

    def best_under(method, budget):
        return max(np.mean(p["gold"]) for p in pts if p["method"] == method and p["kl"] <= budget)

    assert best_under("a", 6.0) > best_under("b", 6.0) + 0.02  # the trap is real

    r = compare_frontiers(pts, "a", "b")
    assert r["winner"] == "b" and r["status"] == "significant"
    assert r["difference"] == pytest.approx(-0.05, abs=0.03)
    lo, hi = r["kl_range"]
    a_kls = [p["kl"] for p in pts if p["method"] == "a"]
    b_kls = [p["kl"] for p in pts if p["method"] == "b"]
    assert min(a_kls) <= lo < hi <= max(b_kls)
    assert r["text"].startswith("b is better than a")

    winners = [compare_frontiers(simulate(rng, 3, shift=-0.05, seed_sd=0.01, designs=designs), "a", "b")["winner"]
               for _ in range(30)]
    assert "a" not in winners and winners.count("b") >= 15


# --- 2. validation scores choose, test scores are reported ------------------------------


def _early_stopper(val: bool, kl_val: bool = False):
    """b seed 0 stops at KL 1.0; its test curve peaks at KL 0.25, its validation curve
    rises to KL 1.0. Every other seed runs to KL 4."""
    pts = [point("sft", None, 0.0, 0.0, id="sft", **({"gold_val": [0.0] * 4} if val else {}))]
    kls = (0.25, 0.5, 1.0, 2.0, 4.0)
    for m, s in (("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)):
        for k in kls if (m, s) != ("b", 0) else kls[:3]:
            test = gao(k, 0.2, 0.0) if (m, s) != ("b", 0) else gao(k, 0.1, 0.1 / (1 + np.log(0.5)))
            extra = {"gold_val": [float(gao(k, 0.2, 0.0))] * 4} if val else {}
            if kl_val:
                extra["kl_val"] = k
            pts.append(point(m, s, k, float(test), id=f"{m}{s}-{k}", **extra))
    return pts


def test_validation_scores_choose_where_a_short_seed_is_best_and_test_scores_are_reported():
    r = compare_frontiers(_early_stopper(val=True), "a", "b")
    assert r["selection"] == "gold_val" and r["kl_range"] == pytest.approx([0.25, 4.0])
    fit = r["fits"]["b"][0]
    assert fit["reach"] == 1.0 and fit["best"] == pytest.approx(1.0)  # chosen on validation, where it rises
    coef = fit["coef"]
    held = gao(1.0, *coef)
    assert held == pytest.approx(gao(1.0, 0.1, 0.1 / (1 + np.log(0.5))), abs=1e-9)  # read from the test fit
    assert r["seed_curves"]["b"][0][-1] == pytest.approx(held)

    control = compare_frontiers([{k: v for k, v in p.items() if k != "gold_val"} for p in _early_stopper(val=True)],
                                "a", "b")
    assert control["selection"] == "gold"
    assert control["fits"]["b"][0]["best"] == pytest.approx(0.25, abs=0.01)  # the test curve's own peak
    assert control["per_seed"]["b"][0] > r["per_seed"]["b"][0]


def test_kl_val_places_the_fits_and_kl_the_reported_numbers():
    rng = np.random.default_rng(5)
    pts = _early_stopper(val=False, kl_val=True)
    for p in pts:  # the test KL is off by up to 30%; the validation KL is exact
        if p["method"] != "sft":
            p["kl"] = p["kl_val"] * float(np.exp(rng.uniform(-0.3, 0.3)))
    r = compare_frontiers(pts, "a", "b")
    assert r["placement"] == "kl_val"
    assert r["fits"]["a"][0]["coef"] == pytest.approx([0.2, 0.0], abs=1e-9)
    assert r["fits"]["a"][0]["reach"] == max(p["kl"] for p in pts if p["method"] == "a" and p["seed"] == 0)
    off = compare_frontiers([{k: v for k, v in p.items() if k != "kl_val"} for p in pts], "a", "b")
    assert off["placement"] == "kl" and off["fits"]["a"][0]["coef"] != pytest.approx([0.2, 0.0], abs=1e-3)
    with pytest.raises(DataError, match="no kl_val"):
        compare_frontiers(pts + [point("a", 0, 1.5, 0.2, id="lacking")], "a", "b")
    bad = compare_frontiers(pts + [point("a", 0, 1.5, 0.2, id="nan-val", kl_val=float("nan"))], "a", "b")
    assert [e["point"] for e in bad["excluded"]] == ["nan-val"] and "kl_val" in bad["excluded"][0]["reason"]


# --- 3. seeds are the unit; Welch's t --------------------------------------------------------


def test_one_number_per_seed_and_a_welch_interval():
    from scipy import stats

    a_vals, b_vals = [0.50, 0.60, 0.55], [0.40, 0.42]
    pts = [p for s, v in enumerate(a_vals) for p in flat("a", s, v)]
    # Two runs for each b seed: still one seed each.
    pts += [p for s, v in enumerate(b_vals) for p in flat("b", s, v, kls=(0.5, 2.0))]
    pts += [point("b", s, 1.0, v, run=f"b-second-run-{s}") for s, v in enumerate(b_vals)]
    r = compare_frontiers(pts, "a", "b", confidence=0.9)
    assert r["seeds"] == {"a": 3, "b": 2}
    assert list(r["per_seed"]["b"].values()) == pytest.approx(b_vals)

    ref = stats.ttest_ind(a_vals, b_vals, equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert r["difference"] == pytest.approx(np.mean(a_vals) - np.mean(b_vals))
    assert r["ci"] == pytest.approx([ci.low, ci.high])
    assert r["df"] == pytest.approx(ref.df)
    assert r["status"] == "significant" and r["winner"] == "a"
    assert r["method"].startswith("Welch")

    close = [p for s, v in enumerate([0.5, 0.6]) for p in flat("a", s, v)]
    close += [p for s, v in enumerate([0.45, 0.62]) for p in flat("b", s, v)]
    r = compare_frontiers(close, "a", "b")
    assert r["status"] == "not significant" and r["winner"] is None
    assert r["ci"][0] < 0 < r["ci"][1]


# --- 4. calibration by simulation ------------------------------------------------------------

EXPERIMENTS = 300


@pytest.mark.parametrize("val", [False, True], ids=["gold", "gold_val"])
@pytest.mark.parametrize("seeds", [2, 3])
def test_calibration_false_positives_and_coverage(seeds, val):
    rng = np.random.default_rng(1000 * seeds + val)
    false_positive = covered = 0
    for _ in range(EXPERIMENTS):
        null = compare_frontiers(simulate(rng, seeds, val=val), "a", "b")
        false_positive += null["status"] == "significant"
        shifted = compare_frontiers(simulate(rng, seeds, shift=0.03, val=val), "a", "b")
        covered += shifted["ci"][0] <= 0.03 <= shifted["ci"][1]
    assert false_positive / EXPERIMENTS <= 0.10
    assert covered / EXPERIMENTS >= 0.85


def test_a_large_true_difference_is_found():
    rng = np.random.default_rng(3)
    wins = sum(compare_frontiers(simulate(rng, 3, shift=0.25), "a", "b")["winner"] == "a" for _ in range(40))
    assert wins >= 32


# --- 5. insufficient evidence ----------------------------------------------------------------


def test_one_seed_is_insufficient():
    pts = flat("ppo", 0, 0.5) + flat("ppo", 1, 0.6) + flat("dpo", 0, 0.4)
    r = compare_frontiers(pts, "ppo", "dpo")
    assert r["status"] == "insufficient" and r["winner"] is None
    assert r["ci"] is None and r["df"] is None
    assert r["difference"] == pytest.approx(0.15)  # a point estimate, without an interval
    assert "dpo has 1 seed" in r["reason"] and "at least 2 per method" in r["reason"]
    assert r["text"].startswith("insufficient evidence") and "dpo has 1 seed" in r["text"]

    r = compare_frontiers(flat("ppo", 0, 0.5), "ppo", "dpo")
    assert r["status"] == "insufficient" and r["seeds"] == {"ppo": 1, "dpo": 0}
    assert r["difference"] is None and r["kl_range"] is None
    assert "ppo has 1 seed and dpo has 0 seeds" in r["reason"]


def test_no_common_kl_range_is_insufficient():
    pts = []
    for s in (0, 1):
        pts += flat("ppo", s, 0.5, kls=(0.1, 0.4))
        pts += flat("dpo", s, 0.5, kls=(0.9, 1.5))
    r = compare_frontiers(pts, "ppo", "dpo")
    assert r["status"] == "insufficient" and r["winner"] is None
    assert r["difference"] is None and r["ci"] is None and r["kl_range"] is None
    assert "no common KL range" in r["reason"]
    assert "reaches at most KL 0.40" in r["reason"] and "starts at KL 0.90" in r["reason"]
    assert "no common KL range" in r["text"]


def test_checkpoints_below_sft_count_against_their_method_instead_of_ending_the_comparison():
    # Every ppo checkpoint below SFT's reward: its seeds' curves sit below SFT, and that is
    # the evidence, not a reason to compare nothing.
    pts = [point("sft", None, 0.0, 0.5, id="sft")]
    for s in (0, 1, 2):
        pts += [point("ppo", s, k, 0.5 - 0.05 * k - 0.002 * s, id=f"p{s}-{k}") for k in (0.3, 0.8, 1.5)]
        pts += [point("dpo", s, k, 0.5 + 0.1 * k + 0.002 * s, id=f"d{s}-{k}") for k in (0.4, 0.9, 1.6)]
    r = compare_frontiers(pts, "ppo", "dpo")
    assert r["status"] == "significant" and r["winner"] == "dpo"
    assert all(v < 0.5 for v in r["per_seed"]["ppo"].values())
    assert r["frontier_points"]["ppo"][0] == ["sft", "p0-0.3", "p0-0.8", "p0-1.5"]


# --- 6. missing KL and failed scores ----------------------------------------------------------


def _base():
    return [p for m, v in (("a", 0.6), ("b", 0.5)) for s in (0, 1) for p in flat(m, s, v + 0.01 * s)]


@pytest.mark.parametrize("kl", [None, float("nan")])
def test_a_point_without_kl_is_excluded_not_put_at_zero(kl):
    base = compare_frontiers(_base(), "a", "b")
    # Put at KL 0 this point would dominate b seed 0's whole frontier.
    r = compare_frontiers(_base() + [point("b", 0, kl, 5.0, id="no-kl")], "a", "b")
    assert r["per_seed"] == base["per_seed"]
    assert all("no-kl" not in ids for ids in r["frontier_points"]["b"].values())
    (entry,) = r["excluded"]
    assert entry["point"] == "no-kl" and entry["method"] == "b" and "KL" in entry["reason"]


def test_failed_prompt_scores_are_left_out_of_the_mean():
    pts = _base()
    pts = [p for p in pts if not (p["method"] == "b" and p["seed"] == 0)]
    pts += [point("b", 0, 0.5, [1.0, None, 0.0, None]), point("b", 0, 2.0, [0.5, float("nan"), 0.5, 0.5 + 1e-9])]
    pts += [point("b", 0, 1.0, [None] * 4, id="all-failed")]
    r = compare_frontiers(pts, "a", "b")
    assert r["per_seed"]["b"][0] == pytest.approx(0.5)
    assert [e["point"] for e in r["excluded"]] == ["all-failed"]
    assert "no valid gold" in r["excluded"][0]["reason"]

    with_val = [{**p, "gold_val": p["gold"]} for p in _base()]
    with_val.append(point("a", 0, 1.0, 0.7, gold_val=[None] * 4, id="val-failed"))
    r = compare_frontiers(with_val, "a", "b")
    assert [e["point"] for e in r["excluded"]] == ["val-failed"]
    assert "gold_val" in r["excluded"][0]["reason"]


# --- 7. the sentence ----------------------------------------------------------------------------


def _one_sentence(text):
    assert "\n" not in text and text.endswith(".") and ". " not in text


def test_text_names_outcome_range_difference_interval_seeds_and_unit():
    better = [p for s, v in enumerate([0.5, 0.6, 0.55]) for p in flat("a", s, v)]
    better += [p for s, v in enumerate([0.40, 0.42]) for p in flat("b", s, v)]
    r = compare_frontiers(better, "a", "b")
    t = r["text"]
    _one_sentence(t)
    assert t.startswith("a is better than b")
    assert "KL 0.5 to 2" in t and f"{r['difference']:.3g}" in t
    assert f"95% CI {r['ci'][0]:.3g} to {r['ci'][1]:.3g}" in t
    assert "3 seeds of a and 2 seeds of b" in t and "seeds as the unit of uncertainty" in t and "Welch" in t

    named = compare_frontiers(better, "a", "b", names={"a": "PPO", "b": "DPO"})["text"]
    assert named.startswith("PPO is better than DPO") and "3 seeds of PPO" in named

    swapped = compare_frontiers(better, "b", "a")
    assert swapped["winner"] == "a" and swapped["text"].startswith("a is better than b")

    close = [p for s, v in enumerate([0.5, 0.6]) for p in flat("a", s, v)]
    close += [p for s, v in enumerate([0.45, 0.62]) for p in flat("b", s, v)]
    t = compare_frontiers(close, "a", "b")["text"]
    _one_sentence(t)
    assert t.startswith("no detectable difference between a and b") and "CI" in t and "2 seeds of b" in t

    t = compare_frontiers(flat("a", 0, 0.5) + close[6:], "a", "b")["text"]
    _one_sentence(t)
    assert t.startswith("insufficient evidence to compare a and b because a has 1 seed")


# --- input validation ------------------------------------------------------------------------------


def test_invalid_inputs_raise_data_error_naming_the_point():
    good = _base()
    with pytest.raises(DataError, match="both 'a'"):
        compare_frontiers(good, "a", "a")
    with pytest.raises(DataError, match="origin"):
        compare_frontiers(good, "a", "sft")
    with pytest.raises(DataError, match="confidence"):
        compare_frontiers(good, "a", "b", confidence=1.5)
    with pytest.raises(DataError, match="list of dicts"):
        compare_frontiers({"method": "a"}, "a", "b")
    with pytest.raises(DataError, match=r"id 'short'.*3 prompts.*has 4"):
        compare_frontiers(good + [point("a", 0, 1.5, [0.1, 0.2, 0.3], id="short")], "a", "b")
    with pytest.raises(DataError, match=r"id 'v2'.*gold_val has 2 prompts"):
        compare_frontiers([{**p, "gold_val": [0.1] * 3} for p in good]
                          + [point("a", 0, 1.5, 0.2, gold_val=[0.1, 0.2], id="v2")], "a", "b")
    with pytest.raises(DataError, match="no gold_val"):
        compare_frontiers(good + [point("a", 0, 1.5, 0.2, gold_val=[0.1] * 4)], "a", "b")
    with pytest.raises(DataError, match="id 'bad'.*non-numeric entry 'x'"):
        compare_frontiers(good + [point("a", 0, 1.5, [0.1, "x", 0.2, 0.3], id="bad")], "a", "b")
    with pytest.raises(DataError, match="'seed'"):
        compare_frontiers([{"method": "a", "kl": 0.5, "gold": [0.1]}], "a", "b")
    with pytest.raises(DataError, match="no 'gold'"):
        compare_frontiers([{"method": "b", "seed": 0, "kl": 0.5}], "a", "b")
    with pytest.raises(DataError, match="kl must be a number"):
        compare_frontiers([point("a", 0, "0.5", 0.1)], "a", "b")
    # Another method's malformed point is not this comparison's business.
    compare_frontiers(good + [{"method": "grpo", "gold": [1.0]}], "a", "b")


# --- power analysis --------------------------------------------------------------------------------

UNIT = [-1 / math.sqrt(2), 1 / math.sqrt(2)]  # two seeds with SD exactly 1


@pytest.mark.parametrize("d, n", [(1.0, 17), (0.8, 26), (0.5, 64), (0.2, 394)])
def test_seeds_needed_matches_textbook_values(d, n):
    r = power_analysis(UNIT, UNIT, difference=d)
    assert r["sd"] == pytest.approx(1.0)
    assert r["seeds_needed"] == n
    # The observed difference of the means is reported, never planned on.
    shifted = power_analysis([d + x for x in UNIT], UNIT)
    assert shifted["observed_difference"] == pytest.approx(d) and shifted["seeds_needed"] is None
    assert shifted["difference"] is None and "no effect stated" in shifted["reason"]


def test_power_is_consistent_and_monotone():
    a = [0.52, 0.55, 0.49, 0.58]
    b = [0.50, 0.47, 0.53]
    r = power_analysis(a, b, difference=0.03)
    assert r["observed_difference"] == pytest.approx(np.mean(a) - np.mean(b))
    at_mdd = power_analysis(a, b, difference=r["min_detectable_difference"])
    assert at_mdd["current_power"] == pytest.approx(0.8, abs=1e-6)

    needed = [power_analysis(a, b, difference=d)["seeds_needed"] for d in (0.01, 0.02, 0.04, 0.08)]
    assert needed == sorted(needed, reverse=True) and needed[0] > needed[-1]
    assert (power_analysis(a, b, 0.03, power=0.9)["seeds_needed"] > r["seeds_needed"]
            > power_analysis(a, b, 0.03, power=0.5)["seeds_needed"])
    assert power_analysis(a, b, 0.03, alpha=0.01)["seeds_needed"] > r["seeds_needed"]
    powers = [power_analysis(a, b, difference=d)["current_power"] for d in (0.0, 0.01, 0.03, 0.1)]
    # At no difference, the size of Welch's test: about alpha (a little under with unequal seed counts).
    assert powers[0] == pytest.approx(0.05, abs=0.015) and powers == sorted(powers)
    in_sds = []
    for k in (1, 2, 5):
        more = power_analysis(UNIT * k, UNIT * k)
        in_sds.append(more["min_detectable_difference"] / more["sd"])
    assert in_sds == sorted(in_sds, reverse=True) and in_sds[0] > in_sds[-1]

    # The seeds it asks for reach the power; one fewer does not.
    from trl_plus.eval.stats import welch_power as _power

    n = power_analysis(UNIT, UNIT, difference=0.7)["seeds_needed"]
    assert _power(0.7, n, n, 0.05) >= 0.8 > _power(0.7, n - 1, n - 1, 0.05)


def test_current_power_agrees_with_simulated_t_tests():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, (20_000, 5))
    y = rng.normal(0.0, 1.0, (20_000, 5))
    rejected = (stats.ttest_ind(x, y, axis=1, equal_var=False).pvalue < 0.05).mean()
    v = np.arange(-2.0, 3.0)
    v = list(v / v.std(ddof=1))  # five seeds with SD exactly 1
    r = power_analysis(v, v, difference=1.0)
    assert r["n_a"] == 5 and r["sd"] == pytest.approx(1.0)
    assert r["current_power"] == pytest.approx(rejected, abs=0.015)


def test_power_analysis_edge_cases():
    zero = power_analysis([0.5, 0.6], [0.5, 0.6], difference=0.0)
    assert zero["seeds_needed"] is None and "0" in zero["reason"]
    assert zero["min_detectable_difference"] > 0
    far = power_analysis(UNIT, UNIT, difference=0.01, max_seeds=100)
    assert far["seeds_needed"] is None and "max_seeds=100" in far["reason"]
    few = power_analysis([0.5], [0.4, 0.45])
    assert few["sd"] is None and few["seeds_needed"] is None and few["current_power"] is None
    assert "a has 1 seed" in few["reason"]
    exact = power_analysis([1.0] * 5, [0.0] * 5, difference=0.1)  # seeds that agree: no noise to power against
    assert exact["sd"] == 0 and exact["current_power"] == 1.0 and exact["seeds_needed"] == 2
    as_dict = power_analysis({0: 0.5, 1: 0.6}, {"x": 0.4, "y": 0.45})
    assert as_dict["n_a"] == 2 and as_dict["observed_difference"] == pytest.approx(0.125)
    for kwargs in ({"alpha": 0.0}, {"power": 1.0}, {"max_seeds": 1}, {"difference": float("inf")}):
        with pytest.raises(DataError):
            power_analysis(UNIT, UNIT, **kwargs)
    with pytest.raises(DataError, match="finite"):
        power_analysis([0.5, float("nan")], UNIT)


def test_frontier_seed_numbers_feed_the_power_analysis():
    rng = np.random.default_rng(11)
    r = compare_frontiers(simulate(rng, 3, shift=0.03), "a", "b")
    plan = power_analysis(r["per_seed"]["a"], r["per_seed"]["b"], difference=0.03)
    assert plan["n_a"] == plan["n_b"] == 3
    assert plan["observed_difference"] == pytest.approx(r["difference"]) and plan["seeds_needed"] >= 2
    assert plan["text"] and plan["min_detectable_difference"] > 0


def test_exported_from_the_eval_package():
    import trl_plus.eval as ev

    assert {"compare_frontiers", "power_analysis"} <= set(ev.__all__)
