"""Sweeps that sweep: a pipeline ``kl_targets`` sweep scales the adaptive controller's
horizon to each run's sample count, so runs with different targets end at different
kl_coefs and KLs (a fixed 10,000-sample horizon moved kl_coef by under 2% in a run of
15 rollouts x 64 samples); the effective horizon is recorded for the report. Also: the
removed ``report.uncertainty`` key is refused with a message that says why."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from trl_plus.errors import RecipeError
from trl_plus.pipeline.config import parse
from trl_plus.pipeline.policy import (
    PPO_DEFAULTS,
    PolicyRun,
    _ppo_recipe,
    kl_controller,
    kl_horizon,
    ppo_samples,
)
from trl_plus.plugins.kl.adaptive import AdaptiveKLController
from trl_plus.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
KL_TARGETS = ["stages.ppo.kl_coefs=null", "stages.ppo.kl_targets=[1.0,4.0]"]


def _ctx(config, root: Path):
    return SimpleNamespace(config=config, run=SimpleNamespace(path=lambda *parts: root.joinpath(*parts)))


# -- the horizon computation --------------------------------------------------------------


def test_sample_count_of_the_pipeline_defaults():
    # 60 optimizer steps, 2 minibatches x 2 PPO epochs = 4 steps per rollout: 15 rollouts of
    # 32 x 2 = 64 samples (the "15 rollouts x 64 samples").
    assert ppo_samples(PPO_DEFAULTS) == {"rollouts": 15, "samples_per_rollout": 64, "samples": 960}
    plan = kl_horizon(PPO_DEFAULTS)
    assert plan["horizon"] == 96 and plan["horizon_source"] == "scaled" and plan["horizon_fraction"] == 0.1
    assert plan["world_size"] == 1


@pytest.mark.parametrize(
    "args, world, expected",
    [
        # gradient accumulation: num_mini_batches x GA micro-batches per rollout, same optimizer steps
        ({"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "num_mini_batches": 1,
          "num_ppo_epochs": 2, "max_steps": 5}, 1, (3, 16)),
        # RLOO's own knobs instead of num_mini_batches
        ({"per_device_train_batch_size": 8, "steps_per_generation": 3, "max_steps": 7}, 1, (3, 24)),
        ({"per_device_train_batch_size": 8, "generation_batch_size": 32, "max_steps": 8}, 2, (4, 32)),
        ({"per_device_train_batch_size": 8, "max_steps": 5}, 1, (5, 8)),
        # several processes: each rollout gathers every process' samples
        ({**PPO_DEFAULTS, "max_steps": 60}, 4, (15, 256)),
    ],
)
def test_sample_count_follows_rloo_scheduling(args, world, expected):
    rollouts, per_rollout = expected
    plan = ppo_samples(args, world)
    assert (plan["rollouts"], plan["samples_per_rollout"]) == expected
    assert plan["samples"] == rollouts * per_rollout


def test_horizon_is_a_fraction_of_the_run_but_at_least_one_rollout():
    assert kl_horizon({**PPO_DEFAULTS, "max_steps": 600})["horizon"] == 960  # 150 rollouts x 64 / 10
    assert kl_horizon(PPO_DEFAULTS, fraction=0.25)["horizon"] == 240
    # one or two rollouts: a tenth would be less than a rollout, and one update could flip kl_coef's sign
    assert kl_horizon({**PPO_DEFAULTS, "max_steps": 4})["horizon"] == 64
    assert kl_horizon({**PPO_DEFAULTS, "max_steps": 8})["horizon"] == 64
    # an explicit horizon wins, whatever the run's length
    explicit = kl_horizon(PPO_DEFAULTS, horizon=10000)
    assert explicit["horizon"] == 10000 and explicit["horizon_source"] == "recipe"
    assert explicit["horizon_fraction"] is None and explicit["samples"] == 960


def test_pipeline_recipe_gets_the_scaled_horizon_and_an_explicit_one_wins(tmp_path):
    config = parse(load_recipe("quickstart", KL_TARGETS))
    args = {**PPO_DEFAULTS, **config.stages.ppo.args}
    expected = kl_horizon(args)["horizon"]
    assert expected == math.ceil(0.1 * ppo_samples(args)["samples"])
    for target in (1.0, 4.0):
        run = PolicyRun("ppo", target, 0, "kl_target")
        raw = _ppo_recipe(_ctx(config, tmp_path), run)
        assert raw["kl"] == {"name": "adaptive", "init": 0.05, "target": target, "horizon": expected}
        info = kl_controller(_ctx(config, tmp_path), run)
        assert info["horizon"] == expected and info["horizon_source"] == "scaled"
    # the fraction and an explicit value
    config = parse(load_recipe("quickstart", KL_TARGETS + ["stages.ppo.horizon_fraction=0.5"]))
    raw = _ppo_recipe(_ctx(config, tmp_path), PolicyRun("ppo", 1.0, 0, "kl_target"))
    assert raw["kl"]["horizon"] == kl_horizon(args, 0.5)["horizon"]
    config = parse(load_recipe("quickstart", KL_TARGETS + ["stages.ppo.horizon=10000"]))
    raw = _ppo_recipe(_ctx(config, tmp_path), PolicyRun("ppo", 1.0, 0, "kl_target"))
    assert raw["kl"]["horizon"] == 10000
    assert kl_controller(_ctx(config, tmp_path), PolicyRun("ppo", 1.0, 0, "kl_target"))["horizon_source"] == "recipe"
    # a kl_coefs run has no controller
    assert kl_controller(_ctx(config, tmp_path), PolicyRun("ppo", 0.05, 0, "kl_coef")) is None


def test_launcher_processes_enter_the_sample_count(tmp_path):
    config = parse(load_recipe("quickstart", KL_TARGETS))
    config.launcher = SimpleNamespace(num_processes=4, accelerate_config=None)
    info = kl_controller(_ctx(config, tmp_path), PolicyRun("ppo", 1.0, 0, "kl_target"))
    args = {**PPO_DEFAULTS, **config.stages.ppo.args}
    assert info["world_size"] == 4 and info["horizon"] == kl_horizon(args, world_size=4)["horizon"]
    assert info["samples"] == 4 * ppo_samples(args)["samples"]


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["stages.ppo.horizon=500"], "stages.ppo.horizon"),  # a kl_coefs sweep never reads it
        (["stages.ppo.horizon_fraction=0.2"], "stages.ppo.horizon_fraction"),
        (KL_TARGETS + ["stages.ppo.horizon=500", "stages.ppo.horizon_fraction=0.2"], "stages.ppo.horizon_fraction"),
        (KL_TARGETS + ["stages.ppo.horizon_fraction=0"], "stages.ppo.horizon_fraction"),
        (KL_TARGETS + ["stages.ppo.horizon=0"], "stages.ppo.horizon"),
    ],
)
def test_horizon_keys_are_validated(overrides, key):
    with pytest.raises(RecipeError) as err:
        load_recipe("quickstart", overrides)
    assert err.value.key == key


# -- the controller over a run's samples ------------------------------------------------------


def _drive(controller, plan, kl_of):
    """The controller as PPO calls it: before each rollout, with the previous rollout's KL
    (none before the first) and the cumulative sample count. Returns kl_coef per rollout."""
    coefs, stats = [], {"samples": 0}
    for rollout in range(plan["rollouts"]):
        coef = controller(rollout * 4, dict(stats))
        coefs.append(coef)
        stats = {"samples": (rollout + 1) * plan["samples_per_rollout"], "kl": kl_of(coef)}
    return coefs


def test_scaled_horizon_lets_the_controller_move_kl_coef_toward_its_target():
    plan = kl_horizon(PPO_DEFAULTS)  # 15 rollouts x 64 samples
    updates = plan["rollouts"] - 1
    # KL far above target on every rollout: kl_coef rises by the clipped 20% error each time
    scaled = _drive(AdaptiveKLController(0.05, 1.0, plan["horizon"]), plan, lambda c: 10.0)
    fixed = _drive(AdaptiveKLController(0.05, 1.0, 10000), plan, lambda c: 10.0)
    assert scaled[-1] / 0.05 == pytest.approx((1 + 0.2 * 64 / 96) ** updates)  # 5.7x
    assert scaled[-1] / 0.05 > 5
    assert fixed[-1] / 0.05 == pytest.approx((1 + 0.2 * 64 / 10000) ** updates)  # the old 1.8%
    assert fixed[-1] / 0.05 < 1.02

    # A policy whose KL answers kl_coef (KL = 0.2 / kl_coef, a stand-in for the penalty's pull):
    # kl_coef 0.05 gives KL 4; a target of 1 needs kl_coef 0.2, a target of 16 needs 0.0125.
    def respond(coef):
        return 0.2 / coef

    finals = {}
    for target, needed in ((1.0, 0.2), (16.0, 0.0125)):
        coefs = _drive(AdaptiveKLController(0.05, target, plan["horizon"]), plan, respond)
        old = _drive(AdaptiveKLController(0.05, target, 10000), plan, respond)
        # the scaled controller closes most of the (log) distance to the kl_coef that meets the target
        gap, left, left_old = (abs(math.log(x / needed)) for x in (0.05, coefs[-1], old[-1]))
        assert left < 0.4 * gap, (target, coefs)
        assert left_old > 0.98 * gap, (target, old)
        finals[target] = (coefs[-1], old[-1], respond(coefs[-1]), respond(old[-1]))
    (lo_coef, lo_old, lo_kl, lo_kl_old), (hi_coef, hi_old, hi_kl, hi_kl_old) = finals[1.0], finals[16.0]
    assert lo_coef / hi_coef > 10 and hi_kl / lo_kl > 10  # the sweep's runs differ
    assert lo_old / hi_old < 1.05 and hi_kl_old / lo_kl_old < 1.05  # with the fixed horizon they did not


# -- a tiny pipeline sweep, trained for real ---------------------------------------------------


def _tiny_sweep(folder: Path, model: Path, horizon: int | None) -> dict:
    from trl_plus.pipeline.runner import run_pipeline

    folder.mkdir(parents=True, exist_ok=True)
    prefs = [json.loads(line) for line in (RECIPES / "data" / "tiny_prefs.jsonl").read_text().splitlines() if line]
    (folder / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"review : the {w} was"}) + "\n"
                                                  for w in ("sets", "music", "cast", "plot")))
    ppo_gt = {"kl_targets": [0.1, 3.0],
              "args": {"max_steps": 60, "per_device_train_batch_size": 16, "max_completion_length": 8,
                       "learning_rate": 3e-3, "logging_steps": 4}}  # 15 rollouts of 32 samples, a log per rollout
    if horizon is not None:
        ppo_gt["horizon"] = horizon
    recipe = {
        # the gold reward: share of the letter 'e' (PPO-GT optimises it directly)
        "rewards": [{"name": "python", "function": "trl_plus.recipes.toy_rewards:char_share",
                     "kwargs": {"chars": "e"}, "alias": "gold"}],
        "stages": {"seeds": [0], "checkpoints": 1, "sft": {"base": str(model), "train": False},
                   "pairs": {"dataset": "prefs.jsonl"}, "ppo_gt": ppo_gt},
        "eval": {"prompts": "prompts.jsonl"},
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run_pipeline(load_recipe(folder / "recipe.yaml"), folder / "run", progress=False, log=lambda *a: None,
                 stop_after="ppo_gt")
    runs = {}
    for target, name in ((0.1, "kl_target0.1-seed0"), (3.0, "kl_target3-seed0")):
        run = folder / "run" / "ppo_gt" / name
        history = json.loads((run / "trainer_state.json").read_text())["log_history"]
        rows = [r for r in history if "kl" in r]
        runs[target] = {
            "controller": json.loads((run / "done.json").read_text())["kl_controller"],
            "recipe": yaml.safe_load((run / "recipe.yaml").read_text()),
            "coefs": [r["kl_coef"] for r in rows],
            "kls": [r["kl"] for r in rows],
            "samples": json.loads((run / "ppo_state.json").read_text())["kl_stats"]["samples"],
        }
    return runs


@pytest.mark.slow
def test_a_kl_targets_sweep_trains_runs_whose_kl_differs(tmp_path, tiny_model_path, one_thread):
    scaled = _tiny_sweep(tmp_path / "scaled", tiny_model_path, None)
    for target, run in scaled.items():
        info = run["controller"]
        # recorded for the report: the effective horizon, how it was set, the run's sample plan
        assert info["horizon_source"] == "scaled" and info["horizon_fraction"] == 0.1
        assert (info["rollouts"], info["samples_per_rollout"], info["samples"]) == (15, 32, 480)
        assert run["samples"] == info["samples"]  # the plan is what the trainer counted
        assert info["horizon"] == 48 and run["recipe"]["kl"]["horizon"] == 48 and info["target"] == target
        assert info["final_kl_coef"] == pytest.approx(run["coefs"][-1])
        assert len(run["coefs"]) == 15
    low, high = scaled[0.1], scaled[3.0]
    # the low target tightens kl_coef, the high one relaxes it: far more than 20% apart
    assert low["coefs"][-1] / high["coefs"][-1] > 3, (low["coefs"], high["coefs"])
    assert high["coefs"][-1] < 0.5 * 0.05
    late = slice(-5, None)
    assert sum(high["kls"][late]) > 1.5 * sum(low["kls"][late]), (low["kls"], high["kls"])

    # the old fixed horizon on the same sweep: near-identical runs
    fixed = _tiny_sweep(tmp_path / "fixed", tiny_model_path, 10000)
    assert fixed[0.1]["controller"]["horizon_source"] == "recipe" and fixed[0.1]["controller"]["horizon"] == 10000
    assert fixed[0.1]["coefs"][-1] / fixed[3.0]["coefs"][-1] < 1.02
    assert all(abs(c / 0.05 - 1) < 0.02 for run in fixed.values() for c in run["coefs"])


# -- report.uncertainty is gone ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["sampling", "seeds"])
def test_report_uncertainty_is_refused_with_the_reason(value):
    with pytest.raises(RecipeError) as err:
        load_recipe("quickstart", [f"report.uncertainty={value}"])
    assert err.value.key == "report.uncertainty"
    message = str(err.value)
    assert "seeds" in message and "unit of uncertainty" in message and "removed" in message


def test_no_shipped_recipe_sets_report_uncertainty():
    for path in RECIPES.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text()) or {}
        assert "uncertainty" not in (raw.get("report") or {}), path
