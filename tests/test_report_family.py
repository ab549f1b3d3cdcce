"""The report's headline tests as one family (Holm), power planned on report.min_effect,
and the interval's scope stated."""

from __future__ import annotations

import numpy as np
import pytest

from trl_plus.errors import DataError
from trl_plus.eval import holm


def test_holm_adjusts_by_rank_keeps_order_and_skips_missing():
    assert holm([0.01, 0.04, 0.03, None, 0.5]) == pytest.approx([0.04, 0.09, 0.09, None, 0.5])
    assert holm([0.2]) == [0.2]
    assert holm([0.6, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []
    with pytest.raises(DataError, match="p-value 1"):
        holm([0.1, 1.5])


def test_holm_keeps_the_familywise_error_at_five_percent_where_separate_tests_do_not():
    """Four independent null tests (p uniform), 20,000 families: any false winner in the family."""
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(20_000, 4))
    separate = (p < 0.05).any(axis=1).mean()
    corrected = np.mean([min(holm(list(row))) < 0.05 for row in p[:4000]])
    assert separate > 0.17  # 1 - 0.95**4 = 0.185
    assert corrected <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 4000)


def _cmp(a, p, status, text):
    return {"a": a, "b": "dpo", "p_value": p, "status": status, "winner": a if status == "significant" else None,
            "text": text}


def test_a_test_significant_alone_but_not_in_the_family_names_no_winner():
    from trl_plus.pipeline.report import _family, _family_line

    gold = _cmp("ppo", 0.03, "significant", "PPO (reward model) is better than DPO at matched KL: over KL 0.5 to 1, ...")
    win = _cmp("ppo", 0.40, "not significant", "no detectable difference between PPO (reward model) and DPO: ...")
    gt_gold = _cmp("ppo_gt", 0.001, "significant", "PPO (gold reward) is better than DPO at matched KL: ...")
    family = [{"a": "ppo", "b": "dpo", "gold": gold, "win_rate": win},
              {"a": "ppo_gt", "b": "dpo", "gold": gt_gold, "win_rate": None}]
    _family(family)
    assert gold["family_size"] == 3 and gold["holm_p"] == pytest.approx(0.06)
    assert gold["status"] == "not significant" and gold["winner"] is None and gold["significant_alone"]
    assert gold["text"].startswith("no winner between PPO (reward model) and DPO") and "3 headline tests" in gold["text"]
    assert gt_gold["status"] == "significant" and gt_gold["holm_p"] == pytest.approx(0.003)
    line = _family_line(family)
    assert "these 3 headline tests are one family" in line and "Holm" in line
    assert "significant alone, not in the family" in line


def test_report_min_effect_is_validated_and_drives_the_power_text():
    from trl_plus.pipeline.config import MIN_EFFECT, ReportSection
    from trl_plus.pipeline.report import _power, _power_text

    assert ReportSection().min_effect == MIN_EFFECT
    with pytest.raises(Exception, match="min_effect"):
        ReportSection(min_effect=0)
    cmp = {"a": "ppo", "b": "dpo", "per_seed": {"ppo": {0: 0.20, 1: 0.22, 2: 0.21}, "dpo": {0: 0.10, 1: 0.12, 2: 0.11}}}
    small, large = _power(cmp, 0.01), _power(cmp, 0.05)
    assert small["seeds_needed"] > large["seeds_needed"]
    assert small["min_detectable_difference"] == pytest.approx(large["min_detectable_difference"])
    text = _power_text(small)
    assert "stated effect of 0.010" in text and "report.min_effect" in text and "observed difference is not" in text
    assert [c["seeds"] for c in small["curve"]][:2] == [2, 3]
    # The curve and the planned seed count come from the same computation.
    reach = next(c["seeds"] for c in small["curve"] if c["power"] >= 0.8) if small["seeds_needed"] <= 20 else None
    assert reach in (None, small["seeds_needed"])


def test_the_report_states_each_kl_target_runs_horizon(tmp_path):
    import json

    from trl_plus.pipeline.report import SCOPE, _kl_controllers

    run = tmp_path / "ppo" / "kl_target3.0-seed0"
    run.mkdir(parents=True)
    (run / "done.json").write_text(json.dumps({"kl_controller": {
        "name": "adaptive", "target": 3.0, "init": 0.05, "horizon": 96, "horizon_source": "scaled",
        "horizon_fraction": 0.1, "rollouts": 15, "samples_per_rollout": 64, "samples": 960, "final_kl_coef": 0.0067}}))
    fixed = tmp_path / "ppo" / "kl_coef0.05-seed0"
    fixed.mkdir(parents=True)
    (fixed / "done.json").write_text(json.dumps({"wall_time_s": 1.0}))
    (line,) = _kl_controllers(tmp_path)
    assert line.startswith("ppo/kl_target3.0-seed0: adaptive KL controller, target 3.0, horizon 96 samples")
    assert "0.1 x its 960 samples (15 rollouts of 64)" in line and "0.05 -> 0.0067" in line
    assert "conditional on this SFT model" in SCOPE and "seeds are the replication" in SCOPE
