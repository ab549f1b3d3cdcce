"""Pipelines a real user runs: an existing SFT model folder, an existing preference
dataset, a prompts file and a reward-model folder as the gold judge, end to end through
the report; and the PPO-on-gold (``ppo_gt``) and adaptive-KL (``kl_targets``) sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trl_plus.cli import main

PREFS = Path(__file__).resolve().parents[1] / "recipes" / "data" / "tiny_prefs.jsonl"
SMALL_ARGS = {"max_steps": 4, "per_device_train_batch_size": 8, "max_completion_length": 8}


def _user_recipe(folder: Path, model: str, rm: str, **stages) -> Path:
    prefs = [json.loads(line) for line in PREFS.read_text().splitlines() if line.strip()]
    (folder / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    trained = {r["prompt"] for r in prefs}
    # held-out prompts: openings no training pair uses
    held = [f"review : the {w} {v}" for w in ("costumes", "soundtrack", "sets", "effects", "editing", "finale")
            for v in ("was", "felt", "seemed", "is")]
    assert not set(held) & trained
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in held))
    recipe = {
        "rewards": [{"name": "reward_model", "model": rm, "alias": "gold"}],  # the held-out gold judge
        "stages": {
            "seeds": [0, 1],
            "checkpoints": 2,
            "sft": {"base": model, "train": False},
            "pairs": {"dataset": "prefs.jsonl"},
            **stages,
        },
        "eval": {"prompts": "prompts.jsonl", "generation": {"max_new_tokens": 8, "batch_size": 16},
                 "kl": {"num_samples": 1}},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow
def test_pipeline_from_an_existing_model_and_preference_dataset(tmp_path, tiny_model_path, tiny_reward_model_path,
                                                                  monkeypatch, capsys):
    recipe = _user_recipe(tmp_path, str(tiny_model_path), str(tiny_reward_model_path),
                          reward={"args": {"num_train_epochs": 1, "per_device_train_batch_size": 16}},
                          ppo={"kl_coefs": [0.05], "args": SMALL_ARGS},
                          dpo={"betas": [0.1], "args": {"max_steps": 4, "per_device_train_batch_size": 8}})
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the recipe's paths resolve against its folder, the run folder against here
    assert main(["compare", str(recipe), "--out", "run", "--no-progress"]) == 0
    out = work / "run"
    assert not (out / "corpus").exists()
    pairs = [json.loads(line) for line in (out / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == sum(1 for line in PREFS.read_text().splitlines() if line.strip())
    assert all("chosen_reward" in p for p in pairs)  # the gold judge's view of the given labels
    data = json.loads((out / "report" / "report.json").read_text())
    assert data["prompts"]["validation"]["count"] + data["prompts"]["test"]["count"] == 24
    assert data["prompts"]["shared_with_validation"] == 0 and data["prompts"]["shared_with_training"] == 0
    gold = data["comparisons"][0]["gold"]
    assert gold["seeds"] == {"ppo": 2, "dpo": 2} and gold["status"] in ("significant", "not significant", "insufficient")
    assert data["verdict"] and data["preference_quality"]["pairs"] == len(pairs)
    assert data["preference_quality"]["gold_margin"] is not None
    # every evaluated point of PPO-RM carries the reward model's score: the over-optimisation curve
    assert data["overoptimisation"]["runs"] and data["best_of_n"]["points"][0]["n"] == 1
    md = (out / "report" / "report.md").read_text()
    assert "## Verdict" in md and "## Preference data quality" in md


@pytest.mark.slow
def test_ppo_gt_and_kl_targets_sweeps(tmp_path, tiny_model_path, tiny_reward_model_path, monkeypatch):
    recipe = _user_recipe(tmp_path, str(tiny_model_path), str(tiny_reward_model_path),
                          ppo_gt={"kl_targets": [0.5, 4.0], "horizon": 64, "args": SMALL_ARGS},
                          dpo={"betas": [0.1], "args": {"max_steps": 4, "per_device_train_batch_size": 8}})
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "recipe.yaml", "--out", "run", "--no-progress"]) == 0
    out = tmp_path / "run"
    runs = sorted(p.name for p in (out / "ppo_gt").iterdir() if p.is_dir())
    assert runs == ["kl_target0.5-seed0", "kl_target0.5-seed1", "kl_target4-seed0", "kl_target4-seed1"]
    for run in runs:
        saved = yaml.safe_load((out / "ppo_gt" / run / "recipe.yaml").read_text())
        assert saved["kl"]["name"] == "adaptive" and saved["kl"]["horizon"] == 64
        assert saved["rewards"][0]["name"] == "reward_model"  # PPO-GT optimises the gold reward itself
        history = json.loads((out / "ppo_gt" / run / "trainer_state.json").read_text())["log_history"]
        assert all("kl_coef" in row for row in history if "loss" in row)
    data = json.loads((out / "report" / "report.json").read_text())
    assert data["comparisons"][0]["a"] == "ppo_gt" and data["comparisons"][0]["gold"]["seeds"]["ppo_gt"] == 2
    assert data["best_of_n"] is None and data["overoptimisation"] is None  # no learned reward model here
