"""A comparison of any number of arms: every registered trainer kind can be an arm of
``stages:`` under its own name, with its sweep (named for its KL knob) and seeds; the
report gives every pair of arms the matched-KL verdict (all pairs one Holm family with the
win-rate tests), ranks the arms over the KL range all of them reach, and draws every arm on
one frontier. The two-arm recipes plan and report as they always did."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import trl_plus
from trl_plus.cli import main
from trl_plus.errors import RecipeError
from trl_plus.pipeline.config import parse
from trl_plus.pipeline.plan import planned_runs
from trl_plus.recipe import load_recipe, validate_dict

KIND = "dpo-copy"  # a third party's kind that consumes pairs
PROMPT_KIND = "ppo-copy"  # and one that consumes prompts
PREFS = Path(__file__).resolve().parents[1] / "recipes" / "data" / "tiny_prefs.jsonl"
HELD = [f"review : the {w} {v}" for w in ("costumes", "soundtrack", "sets", "effects", "editing", "finale")
        for v in ("was", "felt", "seemed", "is")]


class ArmKinds:
    """A third party's plugin: DPO's pieces and PPO's under new names, and a kind without
    a KL knob."""

    @trl_plus.hookimpl
    def trl_plus_register_trainer_kinds(self, register):
        from trl_plus.trainers.kinds import DPO, PPO

        register.add(KIND, dataclasses.replace(DPO, name=KIND, description="DPO, copied"))
        register.add(PROMPT_KIND, dataclasses.replace(PPO, name=PROMPT_KIND, description="PPO, copied"))
        register.add("no-knob", dataclasses.replace(DPO, name="no-knob", kl_field=None, description="no KL knob"))


@pytest.fixture
def hooks(register_plugin, plugin_manager):
    register_plugin(ArmKinds(), name="arm_kinds")
    return plugin_manager


def _quickstart(hooks, *overrides):
    return load_recipe("quickstart", list(overrides), hooks=hooks)


# -- the recipe -------------------------------------------------------------------------------


def test_the_two_arm_recipes_plan_the_same_runs_and_folders(hooks):
    config = parse(_quickstart(hooks))
    assert config.methods == ["ppo", "dpo"] and config.arms == {}
    runs = planned_runs(config, hooks.trainer_kinds)
    assert [r.rel for r in runs] == [f"ppo/kl_coef{k}-seed{s}" for k in ("0.05", "0.2") for s in (0, 1, 2)] + [
        f"dpo/beta0.1-seed{s}" for s in (0, 1, 2)]
    assert [r.marker for r in runs][0] == {"method": "ppo", "strength": 0.05, "seed": 0, "strength_key": "kl_coef"}
    assert [(r.trainer, r.on_reward_model) for r in runs[::3]] == [("ppo", True), ("ppo", True), ("dpo", False)]


def test_a_registered_kind_is_an_arm_under_its_own_name(hooks):
    config = parse(_quickstart(hooks, f"stages.{KIND}.betas=[0.05,0.2]", f"stages.{KIND}.args.max_steps=4",
                               f"stages.{PROMPT_KIND}.betas=[0.1]"))
    assert config.methods == ["ppo", "dpo", KIND, PROMPT_KIND]
    runs = [r for r in planned_runs(config, hooks.trainer_kinds) if r.method in (KIND, PROMPT_KIND)]
    assert [r.rel for r in runs] == [f"{KIND}/beta{b}-seed{s}" for b in ("0.05", "0.2") for s in (0, 1, 2)] + [
        f"{PROMPT_KIND}/beta0.1-seed{s}" for s in (0, 1, 2)]
    assert {r.trainer for r in runs} == {KIND, PROMPT_KIND}
    # pairs like DPO (from the SFT model), prompts on the learned reward model like ppo
    assert {(r.method, r.on_reward_model) for r in runs} == {(KIND, False), (PROMPT_KIND, True)}


@pytest.mark.parametrize("override, key, words", [
    ("stages.dpoo.betas=[0.1]", "stages.dpoo",
     ["Did you mean: dpo?", f"kinds (each can be an arm): dpo, {KIND}, ", "no-knob, online_dpo, ppo"]),
    ("stages.dpo-cpy.betas=[0.1]", "stages.dpo-cpy", [f"Did you mean: {KIND}?", "registered trainer kinds"]),
    (f"stages.{KIND}.args.max_steps=4", f"stages.{KIND}.betas", ["missing required key"]),
    (f"stages.{KIND}.kl_coefs=[0.1]", f"stages.{KIND}.kl_coefs", ["Allowed: args, peft, betas"]),
    (f"stages.{KIND}.betas=[0]", f"stages.{KIND}.betas", ["numbers > 0"]),
    (f"stages.{KIND}.betas=[0.1]", None, []),
    ("stages.no-knob.betas=[0.1]", "stages.no-knob", ["names no KL knob", "kl_field"]),
])
def test_arm_errors_name_the_key(hooks, override, key, words):
    if key is None:
        assert KIND in parse(_quickstart(hooks, override)).arms
        return
    with pytest.raises(RecipeError) as err:
        _quickstart(hooks, override)
    problems = dict(getattr(err.value, "problems", None) or [(err.value.key, str(err.value))])
    assert key in problems, problems
    assert all(w in problems[key] for w in words), problems[key]


def test_an_arms_args_are_its_kinds_config_fields(hooks):
    with pytest.raises(RecipeError) as err:
        _quickstart(hooks, f"stages.{KIND}.betas=[0.1]", f"stages.{KIND}.args.learning_rat=0.1",
                    f"stages.{KIND}.args.beta=0.3")
    problems = dict(err.value.problems)
    assert "unknown DPOConfig field 'learning_rat'. Did you mean: learning_rate?" in problems[
        f"stages.{KIND}.args.learning_rat"]
    assert "set by the pipeline" in problems[f"stages.{KIND}.args.beta"]


def test_an_arm_on_prompts_needs_the_reward_stage(hooks):
    with pytest.raises(RecipeError) as err:
        _quickstart(hooks, f"stages.{PROMPT_KIND}.betas=[0.1]", "stages.reward=null", "stages.ppo=null")
    assert "learned reward model" in dict(err.value.problems)[f"stages.{PROMPT_KIND}"]


def test_validate_names_the_registered_kinds_for_an_unknown_arm(capsys):
    assert main(["validate", "quickstart", "--set", "stages.dpoo.betas=[0.1]"]) == 2
    err = capsys.readouterr().err
    assert "stages.dpoo: unknown key 'dpoo'" in err and "Did you mean: dpo?" in err and "trainer kinds" in err


def test_each_arms_run_recipe_follows_what_its_kind_consumes(hooks, tmp_path, tiny_model_path, tiny_reward_model_path):
    from trl_plus.pipeline.policy import run_recipe

    config = parse(_quickstart(hooks, f"stages.{KIND}.betas=[0.2]", f"stages.{PROMPT_KIND}.betas=[0.3]",
                               f"stages.{PROMPT_KIND}.args.max_steps=8"))
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "pairs.jsonl").write_text(json.dumps({"prompt": "a", "chosen": " b", "rejected": " c"}))
    (tmp_path / "pairs" / "prompts.jsonl").write_text(json.dumps({"prompt": "a"}))
    (tmp_path / "sft").symlink_to(tiny_model_path)
    (tmp_path / "reward").symlink_to(tiny_reward_model_path)
    ctx = SimpleNamespace(config=config, kinds=hooks.trainer_kinds, run=SimpleNamespace(path=tmp_path.joinpath))
    runs = {r.method: r for r in planned_runs(config, hooks.trainer_kinds) if r.seed == 0}
    pairs, prompts = run_recipe(ctx, runs[KIND]), run_recipe(ctx, runs[PROMPT_KIND])
    assert pairs["trainer"] == KIND and pairs[KIND]["beta"] == 0.2 and pairs[KIND]["seed"] == 0
    assert pairs["data"]["train"]["path"] == str(tmp_path / "pairs" / "preferences.jsonl")
    assert pairs[KIND]["ref_logps_cache"] == str(tmp_path / KIND / "ref_logps")
    assert prompts["trainer"] == PROMPT_KIND and prompts[PROMPT_KIND]["beta"] == 0.3
    assert prompts[PROMPT_KIND]["max_steps"] == 8 and prompts[PROMPT_KIND]["save_steps"] == 3
    assert prompts["data"]["train"]["path"] == str(tmp_path / "pairs" / "prompts.jsonl")
    assert [r["name"] for r in prompts["rewards"]] == ["reward_model"]  # the learned reward model, as ppo's
    for raw in (pairs, prompts):  # each an ordinary trainer recipe of its kind
        assert validate_dict(raw, hooks).trainer == raw["trainer"]


# -- the report -------------------------------------------------------------------------------

N = 80


def _point(root, method, key, seed, step, kl, gold, rng, final):
    run = "sft" if method == "sft" else f"{method}/{key}0.1-seed{seed}"
    pid = "sft" if method == "sft" else f"{run}/step-{step}"
    folder = root / "eval" / pid
    folder.mkdir(parents=True, exist_ok=True)
    test = [float(v) for v in rng.normal(gold, 0.05, N)]
    win = {str(i): float(v > 0) for i, v in enumerate(test)}
    rate = float(np.mean(list(win.values())))
    (folder / "eval.json").write_text(json.dumps({
        "prompts": {"count": N}, "gold_reward": {"mean": float(np.mean(test)), "per_prompt": test},
        "kl": None if method == "sft" else {"kl": kl, "stderr": 0.05},
        "win_rates": {} if method == "sft" else {"gold": {"win_rate": rate, "win_rate_ci": [rate - 0.1, rate + 0.1],
                                                          "per_prompt": win, "wins": 1, "ties": 0, "losses": 1}}}))
    point = {"id": pid, "method": method, "seed": seed, "run": run, "strength": 0.1,
             "strength_key": None if method == "sft" else key, "step": step, "path": str(folder), "final": final}
    (folder / "done.json").write_text(json.dumps({"fingerprint": "x", "point": point}))


def _run_folder(root: Path, arms: dict[str, tuple[str, float]]) -> Path:
    """Evaluated checkpoints of each arm (its sweep key, how far above PPO its frontier lies)."""
    rng = np.random.default_rng(0)
    _point(root, "sft", None, None, 0, 0.0, 0.0, rng, True)
    for method, (key, lift) in arms.items():
        for seed in (0, 1, 2):
            for step, kl in ((10, 0.3), (20, 0.7), (30, 1.2)):
                gold = 0.12 * np.sqrt(kl) + lift + 0.005 * (seed - 1)
                _point(root, method, key, seed, step, kl, gold, rng, step == 30)
    return root


def test_the_report_compares_every_pair_of_arms_in_one_family_and_ranks_them(tmp_path):
    from trl_plus.eval.stats import t_interval
    from trl_plus.pipeline import render_report
    from trl_plus.pipeline.plots import ARM_PALETTE, METHOD_COLOURS

    root = _run_folder(tmp_path, {"ppo": ("kl_coef", 0.0), "dpo": ("beta", 0.1), "rloo": ("beta", 0.2),
                                  "my-kind": ("beta", 0.3)})
    out = render_report(root, report_cfg={"title": "three arms"})
    data = json.loads((out / "report.json").read_text())
    assert data["arms"] == ["ppo", "dpo", "rloo", "my-kind"]
    pairs = [(c["a"], c["b"]) for c in data["comparisons"]]
    assert pairs == [("ppo", "dpo"), ("rloo", "dpo"), ("my-kind", "dpo"),  # each arm against DPO first
                     ("ppo", "rloo"), ("ppo", "my-kind"), ("rloo", "my-kind")]
    verdict = " ".join(data["verdict"])
    for c in data["comparisons"]:  # every pair's verdict, on gold reward and on win rate
        assert c["gold"]["text"][1:] in verdict and c["win_rate"]["text"] in verdict
        assert c["gold"]["family_size"] == 12 and c["gold"]["status"] == "significant"
    assert "- my-kind is better than DPO at matched KL" in (out / "report.md").read_text()  # as its kind is named
    assert "RLOO is better than PPO (reward model) at matched KL" in verdict
    family = next(line for line in data["verdict"] if line.startswith("Multiplicity"))
    assert "these 12 headline tests are one family" in family and "Holm" in family
    assert family.count("adjusted") == 12 and "RLOO vs my-kind, win rate" in family

    ranking = data["ranking"]
    assert [r["method"] for r in ranking["rows"]] == ["my-kind", "rloo", "dpo", "ppo"]
    assert [r["rank"] for r in ranking["rows"]] == [1, 2, 3, 4]
    assert ranking["kl_range"] == pytest.approx([0.3, 1.2])
    for row in ranking["rows"]:  # the one t interval over seeds
        assert row["ci"] == pytest.approx(t_interval(list(ranking["per_seed"][row["method"]].values()))["ci"])
    assert any(line.startswith("Ranked by mean gold reward over KL 0.3 to 1.2") for line in data["verdict"])
    md = (out / "report.md").read_text()
    assert "Ranking of the 4 arms" in md and "| 1 | my-kind | 3 | [0.30, 1.20] |" in md and "| 2 | RLOO | 3 |" in md
    assert "| rank | arm | seeds |" in md and "<td>1</td><td>my-kind</td>" in (out / "report.html").read_text()
    # one frontier with every arm, each in its own colour
    assert (out / "plots" / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(ranking["curves"]) == {"ppo", "dpo", "rloo", "my-kind"} and all(ranking["curves"].values())
    assert [METHOD_COLOURS.get(m) for m in ("rloo", "my-kind")] == list(ARM_PALETTE[:2])
    assert METHOD_COLOURS.get("ppo") == "#d62728"


def test_a_two_arm_report_keeps_its_table_and_sentences(tmp_path):
    from trl_plus.pipeline import render_report

    out = render_report(_run_folder(tmp_path, {"ppo": ("kl_coef", 0.0), "dpo": ("beta", 0.1)}))
    data = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert [(c["a"], c["b"]) for c in data["comparisons"]] == [("ppo", "dpo")]
    text = data["comparisons"][0]["gold"]["text"]
    assert data["verdict"][0] == text[:1].upper() + text[1:] and text.startswith("DPO is better than PPO")
    assert "these 2 headline tests are one family" in data["verdict"][2] and "Ranking of the" not in md
    assert not any(line.startswith("Ranked") for line in data["verdict"])
    assert "| method | seeds | KL range compared |" in md
    # with two arms the ranking is the pair's comparison: same range, same per-seed numbers
    gold = data["comparisons"][0]["gold"]
    assert data["ranking"]["kl_range"] == gold["kl_range"] and data["ranking"]["per_seed"] == gold["per_seed"]


# -- end to end -------------------------------------------------------------------------------


def _recipe(folder: Path, model) -> dict:
    """PPO on the gold reward, DPO and the third party's DPO copy on the tiny model: no SFT
    training, no reward stage, two steps a run, two checkpoints, two seeds."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prefs.jsonl").write_text(PREFS.read_text())
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in HELD))
    dpo = {"betas": [0.1], "args": {"max_steps": 2, "per_device_train_batch_size": 8, "learning_rate": 5.0e-3}}
    return {
        "gold": [{"name": "python", "function": "trl_plus.recipes.toy_rewards:char_share", "kwargs": {"chars": "e"},
                  "alias": "gold"}],
        "stages": {"seeds": [0, 1], "checkpoints": 2, "sft": {"base": str(model), "train": False},
                   "pairs": {"dataset": "prefs.jsonl"},
                   "ppo_gt": {"kl_coefs": [0.05], "args": {"max_steps": 2, "per_device_train_batch_size": 8,
                                                           "num_mini_batches": 1, "max_completion_length": 6,
                                                           "learning_rate": 5.0e-3}},
                   "dpo": dpo, KIND: dpo},
        "eval": {"prompts": "prompts.jsonl", "generation": {"max_new_tokens": 6, "batch_size": 24},
                 "kl": {"num_samples": 1}},
    }


@pytest.mark.slow
def test_a_pipeline_with_a_third_partys_arm_reports_every_pair(tmp_path, hooks, tiny_model_path, one_thread):
    from trl_plus.pipeline import run_pipeline

    folder = tmp_path / "cfg"
    raw = _recipe(folder, tiny_model_path)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(raw))
    recipe = validate_dict(raw, hooks, source=folder / "recipe.yaml")
    out = tmp_path / "run"
    report = run_pipeline(recipe, out, hooks=hooks, progress=False, log=lambda *_: None)

    for run in (f"{KIND}/beta0.1-seed0", f"{KIND}/beta0.1-seed1"):
        marker = json.loads((out / run / "done.json").read_text())
        assert marker["global_step"] == 2 and marker["settings"]["trainer"] == KIND
        assert marker["settings"][KIND]["beta"] == 0.1 and len(list((out / "eval" / run).glob("step-*"))) == 2
    data = json.loads((report / "report.json").read_text())
    assert data["complete"] and data["arms"] == ["ppo_gt", "dpo", KIND]
    assert [(c["a"], c["b"]) for c in data["comparisons"]] == [("ppo_gt", "dpo"), (KIND, "dpo"), ("ppo_gt", KIND)]
    verdict = " ".join(data["verdict"])
    for c in data["comparisons"]:
        assert c["gold"]["text"][1:] in verdict
    tests = [t for c in data["comparisons"] for t in (c["gold"], c["win_rate"]) if t and t.get("p_value") is not None]
    assert len(tests) >= 2 and all(t["family_size"] == len(tests) for t in tests)
    assert f"these {len(tests)} headline tests are one family" in verdict
    md = (report / "report.md").read_text()
    assert "Ranking of the 3 arms" in md and f"| {KIND} |" in md
    assert {r["method"] for r in data["ranking_table"]} == {"ppo_gt", "dpo", KIND}
    assert (report / "plots" / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{KIND}/beta0.1-seed0" in {r["stage"] for r in data["costs"]}
    assert any(label.startswith(f"{KIND}/") for label in data.get("histories", {})) or (
        report / "plots" / "training.png").exists()


def test_rank_frontiers_matches_the_pairwise_comparison_and_says_when_no_range_is_common():
    from trl_plus.eval import compare_frontiers, rank_frontiers

    rng = np.random.default_rng(1)
    points = [{"method": "sft", "seed": None, "kl": 0.0, "gold": list(rng.normal(0, 0.05, 40))}]
    for method, lift, kls in (("a", 0.0, (0.2, 0.6, 1.0)), ("b", 0.1, (0.3, 0.7, 1.4)), ("c", 0.2, (2.0, 3.0))):
        for seed in (0, 1, 2):
            points += [{"method": method, "seed": seed, "run": f"{method}{seed}", "step": i, "kl": kl,
                        "gold": list(rng.normal(0.1 * np.sqrt(kl) + lift, 0.05, 40))} for i, kl in enumerate(kls)]
    pair, ranked = compare_frontiers(points, "a", "b"), rank_frontiers(points, ["a", "b"])
    assert ranked["status"] == "ranked" and ranked["kl_range"] == pair["kl_range"]
    assert ranked["per_seed"] == pair["per_seed"] and ranked["curves"] == pair["curves"]
    assert [r["method"] for r in ranked["rows"]] == ["b", "a"]
    none = rank_frontiers(points, ["a", "b", "c"], names={"c": "C"})
    assert none["status"] == "insufficient" and none["kl_range"] is None and none["fits"]["c"]
    assert "C starts at KL 2.00" in none["reason"] and none["text"].startswith("no ranking over a common KL range")
