"""The comparison report rendered from a synthetic run folder (no training): the verdict
is the matched-KL frontier comparison, it agrees with the frontier plot's curves, every
section is there, and the HTML is self-contained."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from trl_plus.pipeline.rundir import write_json

N_TEST, N_VAL = 120, 60


def _point(root, method, seed, step, kl, gold_mean, final, rng, proxy=None, val_mean=None, strength=0.1):
    key = "beta" if method == "dpo" else "kl_coef"
    run = "sft" if method == "sft" else f"{method}/{key}{strength:g}-seed{seed}"
    pid = "sft" if method == "sft" else f"{run}/step-{step}"
    folder = root / "eval" / pid
    test = [float(v) for v in rng.normal(gold_mean, 0.1, N_TEST)]
    val = [float(v) for v in rng.normal(gold_mean if val_mean is None else val_mean, 0.1, N_VAL)]
    point = {"id": pid, "method": method, "seed": seed, "run": run, "strength": strength,
             "strength_key": None if method == "sft" else key, "step": step, "path": str(folder), "final": final}
    per_prompt_win = {str(i): float(v > 0) for i, v in enumerate(test)}
    wr = float(np.mean(list(per_prompt_win.values())))
    result = {
        "prompts": {"count": N_TEST},
        "gold_reward": {"mean": float(np.mean(test)), "ci": [float(np.mean(test)) - 0.02, float(np.mean(test)) + 0.02],
                        "stderr": 0.01, "per_prompt": test, "failed": 0},
        "kl": None if method == "sft" else {"kl": kl, "stderr": 0.05},
        "win_rates": {} if method == "sft" else {"gold": {
            "win_rate": wr, "win_rate_ci": [wr - 0.1, wr + 0.1], "lc_win_rate": 0.6,
            "lc_win_rate_ci": [0.5, 0.7], "wins": 80, "ties": 10, "losses": 30, "judged": N_TEST,
            "per_prompt": per_prompt_win}},
        "lm_eval": {"results": {"trl_plus_review_word_order": {"acc,none": 0.9 - 0.05 * (method != "sft"),
                                                                "acc_stderr,none": 0.02}}} if final else None,
        "examples": [{"prompt": "review : the plot was", "completion": " <b>great</b> .", "reference": " dull ."}],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(result))
    write_json(folder / "val" / "eval.json", {"gold_reward": {"per_prompt": val}})
    if proxy is not None:
        write_json(folder / "proxy.json", {"mean": proxy, "per_prompt": [proxy] * N_TEST})
    write_json(folder / "done.json", {"fingerprint": "x", "wall_time_s": 1.5, "peak_rss_mb": 700.0, "tokens": 1000,
                                      "point": point})


def _true_gold(method, seed, kl):
    """DPO's curve lies above PPO's at every KL; each seed has its own offset."""
    offset = {0: 0.01, 1: -0.01, 2: 0.0}[seed]
    return 0.12 * np.sqrt(kl) + (0.05 if method == "dpo" else 0.0) + offset


@pytest.fixture
def run_folder(tmp_path):
    rng = np.random.default_rng(0)
    _point(tmp_path, "sft", None, 0, 0.0, 0.0, True, rng, proxy=0.0)
    for seed in (0, 1, 2):
        # The trap of a best-under-a-budget verdict: DPO's checkpoints sit at small KL,
        # PPO's at larger KL, so PPO's best checkpoint under a budget of ~1.0 looks better.
        for step, kl in ((10, 0.3), (20, 0.6), (30, 1.1)):
            _point(tmp_path, "dpo", seed, step, kl, _true_gold("dpo", seed, kl), step == 30, rng)
        for step, kl in ((10, 0.5), (20, 0.95), (30, 1.6)):
            proxy = 0.3 * kl  # the reward model's score keeps rising ...
            gold = _true_gold("ppo", seed, kl) if step < 30 or seed else 0.0  # ... seed 0's gold collapses
            _point(tmp_path, "ppo", seed, step, kl, gold, step == 30, rng, proxy=proxy)
    # a checkpoint whose KL estimate is missing: off every frontier, never KL 0
    _point(tmp_path, "dpo", 0, 40, None, 0.9, False, rng)
    for method, key in (("ppo", "kl_coef"), ("dpo", "beta")):
        for seed in (0, 1, 2):
            state = tmp_path / method / f"{key}0.1-seed{seed}" / "trainer_state.json"
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(json.dumps({"log_history": [{"step": s, "loss": 1 / s, "reward": s / 10, "kl": s / 20,
                                                          "beta": 0.1} for s in range(1, 21)]}))
            write_json(state.parent / "done.json", {"fingerprint": "y", "wall_time_s": 10.0, "peak_rss_mb": 800.0,
                                                    "tokens": 5000})
    pairs = [{"prompt": f"p{i % 50}", "chosen": "good good good" if i % 4 else "ok", "rejected": "bad",
              "chosen_reward": 0.5, "rejected_reward": 0.1 if i % 10 else 0.6} for i in range(100)]
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    write_json(tmp_path / "reward" / "heldout_scores.json", {"rm_chosen": [1.0] * 9 + [0.0], "rm_rejected": [0.5] * 10,
                                                             "gold_chosen": [0.5] * 10, "gold_rejected": [0.1] * 10})
    bon = [{"n": n, "kl": float(np.log(n) - (n - 1) / n), "gold": 0.02 * np.log2(n), "proxy": 0.1 * n, "prompts": N_TEST}
           for n in (1, 2, 4, 8, 16)]
    write_json(tmp_path / "eval" / "best_of_n" / "best_of_n.json", {"points": bon, "text": "best-of-n from SFT."})
    return tmp_path


def test_verdict_compares_frontiers_at_matched_kl(run_folder):
    from trl_plus.pipeline import render_report

    out = render_report(run_folder, report_cfg={"title": "Synthetic <run>"})
    data = json.loads((out / "report.json").read_text())
    gold = data["comparisons"][0]["gold"]
    assert (gold["status"], gold["winner"]) == ("significant", "dpo")  # not PPO, as a KL-budget pick would say
    assert gold["seeds"] == {"ppo": 3, "dpo": 3}
    lo, hi = gold["kl_range"]
    assert lo == pytest.approx(0.5, abs=0.01) and hi <= 1.1 + 1e-9  # where every seed of both methods has points
    assert gold["ci"][1] < 0  # PPO minus DPO
    # the plot's thick curves are the verdict's: DPO's mean frontier above PPO's across the range
    assert all(d >= p for d, p in zip(gold["curves"]["dpo"], gold["curves"]["ppo"]))
    assert data["verdict"][0].lower() == gold["text"].lower() and "DPO is better than PPO (reward model)" in gold["text"]
    assert "seeds" in gold["text"]
    # the checkpoint without KL is named and left off, never placed at KL 0
    assert [e["id"] for e in data["excluded"]] == ["dpo/beta0.1-seed0/step-40"]
    assert "dpo/beta0.1-seed0/step-40" not in json.dumps(gold["frontier_points"])
    assert data["comparisons"][0]["win_rate"]["status"] in ("significant", "not significant")


def test_report_sections_and_escaping(run_folder):
    from trl_plus.pipeline import render_report

    out = render_report(run_folder, report_cfg={"title": "Synthetic <run>"})
    data = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    for section in ("## Verdict", "## Reward vs KL frontier", "## Win rate", "## Best-of-n baseline",
                    "## Reward over-optimisation", "## Power", "## Preference data quality", "## lm-eval",
                    "## Training curves", "## Cost"):
        assert section in md, section
    # over-optimisation: seed 0's gold collapses while its proxy rises
    flagged = {r["run"]: r["overoptimised"] for r in data["overoptimisation"]["runs"]}
    assert flagged["ppo/kl_coef0.1-seed0"] is True and flagged["ppo/kl_coef0.1-seed1"] is False
    assert data["power"]["seeds_needed"] is not None and data["power"]["min_detectable_difference"] > 0
    q = data["preference_quality"]
    assert q["chosen_longer_share"] == pytest.approx(0.75) and any("length bias" in w for w in q["warnings"])
    assert q["rm_gold_agreement"]["agreement"] == pytest.approx(0.9)
    assert "| SFT (reference) | review_word_order | 0.900 |" in md and "-0.050" in md
    html = (out / "report.html").read_text()
    assert "Synthetic &lt;run&gt;" in html and "&lt;b&gt;great&lt;/b&gt;" in html  # escaped
    assert "Synthetic <run>" in md  # markdown is not HTML-escaped
    srcs = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(srcs) == 8 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for name in ("frontier", "win_rates", "best_of_n", "overoptimisation", "power", "preference_quality", "training", "cost"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    costs = {r["stage"]: r for r in data["costs"]}
    assert costs["eval"]["steps"] == 20 and costs["ppo/kl_coef0.1-seed0"]["wall_time_s"] == 10.0


def test_one_method_is_insufficient_evidence(run_folder):
    import shutil

    from trl_plus.pipeline import render_report

    shutil.rmtree(run_folder / "eval" / "ppo")
    data = json.loads((render_report(run_folder) / "report.json").read_text())
    assert data["comparisons"] == [] and data["verdict"][0].startswith("Insufficient evidence")


def test_report_command_needs_a_finished_run(tmp_path, capsys):
    from trl_plus.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "not a finished run folder" in capsys.readouterr().err


def test_win_rate_rows_are_each_runs_last_judged_checkpoint():
    from trl_plus.pipeline.report import _win_rows

    def pt(pid, method, step, final, rate=0.5):
        return {"id": pid, "method": method, "strength_key": "beta", "strength": 0.1, "seed": 0, "step": step,
                "kl": 0.1, "final": final, "win_rate": {"win_rate": rate, "win_rate_ci": [0.4, 0.6]}}

    points = [pt("sft", "sft", 0, True), pt("d/2", "dpo", 2, False), pt("d/4", "dpo", 4, True),
              pt("p/2", "ppo", 2, False), pt("p/4", "ppo", 4, True, rate=None)]
    rows = _win_rows(points)
    assert [r["label"] for r in rows] == ["DPO beta=0.1 seed 0 (step 4, KL 0.10)"]  # SFT and unjudged runs left out


def test_report_says_how_the_kl_axis_was_estimated(run_folder):
    from trl_plus.pipeline import render_report

    # eval.json from before the token estimator names none: it measured the log-ratio
    out = render_report(run_folder)
    measure = json.loads((out / "report.json").read_text())["kl_measure"]
    assert measure["estimators"] == ["sample"] and measure["median_stderr"] == pytest.approx(0.05)
    trained = [f for f in run_folder.glob("eval/*/*/*/eval.json") if f.parent.name != "val"]
    for i, f in enumerate(trained):
        result = json.loads(f.read_text())
        if result.get("kl"):
            result["kl"].update(estimator="token", num_samples=1, stderr=0.01 * (1 + i % 3))
            f.write_text(json.dumps(result))
    out = render_report(run_folder)
    measure = json.loads((out / "report.json").read_text())["kl_measure"]
    assert (measure["estimators"], measure["samples"]) == (["token"], [1])
    assert measure["checkpoints"] == sum(1 for f in trained if json.loads(f.read_text()).get("kl", {}).get("kl") is not None)
    sentence = ("by the token estimator from 1 sample per test prompt (median standard error 0.020 nats)")
    assert sentence in (out / "report.md").read_text() and sentence in (out / "report.html").read_text()
