"""The comparison report rendered from a synthetic run folder (no training): the verdict
says what the numbers say, and the HTML is self-contained."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from trl_plus.pipeline.rundir import write_json


def _point(root, method, seed, step, kl, gold_mean, final, rng, n=120):
    run = "sft" if method == "sft" else f"{method}/beta0.1-seed{seed}"
    pid = "sft" if method == "sft" else f"{run}/step-{step}"
    folder = root / "eval" / pid
    samples = list(rng.normal(gold_mean, 0.1, n))
    point = {"id": pid, "method": method, "seed": seed, "run": run, "strength": 0.1,
             "strength_key": None if method == "sft" else "beta", "step": step, "path": str(folder), "final": final}
    per_prompt = {str(i): float(v > 0) for i, v in enumerate(samples)}
    result = {
        "gold_reward": {"mean": float(np.mean(samples)), "ci": [float(np.mean(samples)) - 0.02, float(np.mean(samples)) + 0.02],
                        "stderr": 0.01},
        "kl": None if method == "sft" else {"kl": kl, "stderr": 0.05},
        "win_rates": {} if method == "sft" or not final else {"gold": {
            "win_rate": 0.7, "win_rate_ci": [0.62, 0.78], "lc_win_rate": 0.69, "lc_win_rate_ci": [0.6, 0.77],
            "wins": 80, "ties": 10, "losses": 30, "judged": 120, "per_prompt": per_prompt}},
        "lm_eval": {"results": {"trl_plus_review_sentiment": {"acc,none": 0.5 + 0.05 * (method != "sft"),
                                                               "acc_stderr,none": 0.05}}} if final else None,
        "examples": [{"prompt": "review : the plot was", "completion": " <b>great</b> .", "reference": " dull ."}],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(result))
    write_json(folder / "gold_samples.json", samples)
    write_json(folder / "done.json", {"fingerprint": "x", "wall_time_s": 1.5, "peak_rss_mb": 700.0, "tokens": 1000,
                                      "point": point})


@pytest.fixture
def run_folder(tmp_path):
    rng = np.random.default_rng(0)
    _point(tmp_path, "sft", None, 0, 0.0, 0.0, True, rng)
    for seed in (0, 1):
        for step, kl, gold in ((10, 0.5, 0.10), (20, 1.0, 0.15)):
            _point(tmp_path, "dpo", seed, step, kl + 0.05 * seed, gold, step == 20, rng)
            _point(tmp_path, "ppo", seed, step, kl, gold + 0.001, step == 20, rng)
    for method in ("ppo", "dpo"):
        for seed in (0, 1):
            state = tmp_path / method / f"beta0.1-seed{seed}" / "trainer_state.json"
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(json.dumps({"log_history": [{"step": s, "loss": 1 / s, "reward": s / 10, "kl": s / 20,
                                                          "beta": 0.1} for s in range(1, 21)]}))
            write_json(state.parent / "done.json", {"fingerprint": "y", "wall_time_s": 10.0, "peak_rss_mb": 800.0,
                                                    "tokens": 5000})
    return tmp_path


def test_report_from_a_run_folder(run_folder):
    from trl_plus.pipeline import render_report

    out = render_report(run_folder, report_cfg={"title": "Synthetic <run>"})
    data = json.loads((out / "report.json").read_text())
    assert data["budget"] == pytest.approx(1.0)  # PPO reaches 1.0, DPO 1.05: compared where both are
    assert data["results"]["dpo"]["seeds"] == 2
    assert data["reference"]["mean"] == pytest.approx(0.0, abs=0.03)
    md = (out / "report.md").read_text()
    # both beat SFT clearly; equal methods: the difference is reported as not significant
    assert md.count("clearly better, the intervals do not overlap") == 2
    assert "not significant" in md
    assert "| SFT (reference) | review_sentiment | acc |" in md and "+0.050" in md
    html = (out / "report.html").read_text()
    assert "Synthetic &lt;run&gt;" in html and "&lt;b&gt;great&lt;/b&gt;" in html  # escaped
    assert "Synthetic <run>" in md  # markdown is not HTML-escaped
    srcs = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    costs = {r["stage"]: r for r in data["costs"]}
    assert costs["eval"]["steps"] == 9 and costs["ppo/beta0.1-seed0"]["wall_time_s"] == 10.0


def test_report_command_needs_a_finished_run(tmp_path, capsys):
    from trl_plus.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "not a finished run folder" in capsys.readouterr().err
