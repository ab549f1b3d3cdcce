"""`trl-plus quickstart --arms all`: the five-arm recipe on the quickstart's task."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections import Counter  # noqa: E402

from trl_plus.cli import main  # noqa: E402
from trl_plus.manager import Hooks  # noqa: E402
from trl_plus.pipeline.config import parse  # noqa: E402
from trl_plus.pipeline.plan import planned_runs  # noqa: E402
from trl_plus.recipe import load_recipe  # noqa: E402


def test_the_arms_recipe_runs_five_arms_over_three_seeds_on_the_quickstart_task():
    hooks = Hooks()
    arms = load_recipe("quickstart-arms", hooks=hooks)
    base = load_recipe("quickstart", hooks=hooks)
    config = parse(arms, hooks)
    runs = planned_runs(config, hooks.trainer_kinds)
    assert Counter(run.method for run in runs) == {"ppo": 3, "rloo": 3, "grpo": 3, "online_dpo": 3, "dpo": 3}
    assert {run.seed for run in runs} == {0, 1, 2}
    # the same task as the quickstart: corpus, SFT model, pairs, reward model and evaluation
    for key in ("corpus", "sft", "pairs", "reward"):
        assert arms.raw["stages"][key] == base.raw["stages"][key], key
    assert arms.raw["gold"] == base.raw["gold"] and arms.raw["eval"] == base.raw["eval"]


def test_quickstart_arms_all_runs_the_arms_recipe_into_its_own_folder(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr("trl_plus.commands.compare.run_recipe",
                        lambda recipe, out, **kw: ran.append((recipe.source.name, out.name)) or 0)
    monkeypatch.chdir(tmp_path)
    assert main(["quickstart", "--arms", "all", "--no-progress"]) == 0
    assert main(["quickstart", "--no-progress"]) == 0
    assert main(["quickstart", "--arms", "all", "--out", "elsewhere", "--no-progress"]) == 0
    assert ran == [("quickstart-arms.yaml", "quickstart-arms"), ("quickstart.yaml", "quickstart"),
                   ("quickstart-arms.yaml", "elsewhere")]


# The arms recipe reduced for a test: every stage runs, on a few hundred rows.
SMALL = {
    "seeds": [0, 1], "checkpoints": 2,
    "corpus": {"reviews": 1200, "prompts": 160, "eval_prompts": 24, "val_prompts": 16},
    "sft.model": {"hidden_size": 32, "num_layers": 1}, "sft.args": {"per_device_train_batch_size": 64},
    "pairs": {"max_new_tokens": 12}, "reward.args": {"num_train_epochs": 1},
    "ppo.args": {"max_steps": 4, "per_device_train_batch_size": 8, "max_completion_length": 12},
    "rloo.args": {"max_steps": 4, "per_device_train_batch_size": 8, "max_completion_length": 12},
    "online_dpo.args": {"max_steps": 4, "steps_per_round": 2, "prompts_per_round": 32,
                        "per_device_train_batch_size": 8, "max_completion_length": 12},
    "dpo.args": {"max_steps": 4},
}


def _reduced_arms_recipe(folder):
    import yaml

    from trl_plus.recipe import read_yaml

    raw = read_yaml((load_recipe("quickstart-arms").source).read_text())
    del raw["stages"]["grpo"]  # the four arms: PPO, DPO, online DPO, RLOO
    for path, values in SMALL.items():
        if not isinstance(values, dict):
            raw["stages"][path] = values
            continue
        node = raw["stages"]
        for key in path.split("."):
            node = node[key]
        node.update(values)
    raw["eval"].update({"generation": {**raw["eval"]["generation"], "max_new_tokens": 12},
                        "lm_eval": {"limit": 8}})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(raw))
    return raw


def test_a_reduced_four_arm_quickstart_reports_every_pair_the_ranking_and_compute(tmp_path, one_thread):
    import json

    from trl_plus.pipeline import run_pipeline
    from trl_plus.recipe import validate_dict

    hooks = Hooks()
    raw = _reduced_arms_recipe(tmp_path / "cfg")
    recipe = validate_dict(raw, hooks, source=tmp_path / "cfg" / "recipe.yaml")
    report = run_pipeline(recipe, tmp_path / "run", hooks=hooks, progress=False, log=lambda *_: None)

    data = json.loads((report / "report.json").read_text())
    arms = {"ppo", "rloo", "online_dpo", "dpo"}
    assert data["complete"] and set(data["arms"]) == arms
    pairs = {frozenset((c["a"], c["b"])) for c in data["comparisons"]}
    assert pairs == {frozenset((a, b)) for a in arms for b in arms if a < b}  # every pair of arms, once
    verdict = " ".join(data["verdict"])
    tests = [t for c in data["comparisons"] for t in (c["gold"], c["win_rate"]) if t and t.get("p_value") is not None]
    assert tests and all(t["family_size"] == len(tests) for t in tests)
    assert f"these {len(tests)} headline tests are one family" in verdict and "Holm" in verdict
    assert {r["method"] for r in data["ranking_table"]} == arms
    md = (report / "report.md").read_text()
    assert "Ranking of the 4 arms" in md and "Reward vs compute" in md
    for plot in ("frontier.png", "compute.png"):
        assert (report / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    # every evaluated checkpoint of every arm carries its training compute
    for arm in arms:
        records = [json.loads(p.read_text()) for p in (tmp_path / "run").glob(f"{arm}/*/checkpoint-*/compute.json")]
        assert records and all(r["flops"] > 0 for r in records), arm
