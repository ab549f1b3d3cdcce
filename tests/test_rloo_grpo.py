"""The ``rloo`` and ``grpo`` trainer kinds: their shipped recipes train through the CLI and
learn, the KL schedule drives TRL's ``beta``, reward sources are logged per source, the
rollout and data filters and the lifecycle hooks work, the nothing-scored guard fires, a run
killed with SIGKILL resumes with its schedule's state, and both are drop-ins for TRL's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import trl_plus
from trl_plus.cli import main
from test_resume import kill_after_checkpoint, output  # noqa: E402 - tests/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "recipes" / "toy_rewards.py"
KINDS = ("rloo", "grpo")
LONG = 100_000  # max_steps no test waits for


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models on a shared CPU: one torch thread."""


def logged(trainer_or_folder) -> list[dict]:
    if isinstance(trainer_or_folder, (str, Path)):
        return json.loads((Path(trainer_or_folder) / "trainer_state.json").read_text())["log_history"]
    return trainer_or_folder.state.log_history


def prompts(n: int = 32) -> list[str]:
    rows = (ROOT / "recipes" / "data" / "tiny_prefs.jsonl").read_text().splitlines()
    return [json.loads(line)["prompt"] for line in rows if line][:n]


def letter(chars: str, alias: str, weight: float = 1.0) -> dict:
    return {"name": "python", "function": f"{TOY}:char_share", "kwargs": {"chars": chars}, "alias": alias,
            "weight": weight}


def make(kind: str, tmp_path, tiny_model_path, steps: int = 4, **kwargs):
    """A trl-plus trainer of ``kind`` on the tiny model: one generation batch of 8 per step."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cls, config_cls = {"rloo": (trl_plus.RLOOTrainer, trl_plus.RLOOConfig),
                       "grpo": (trl_plus.GRPOTrainer, trl_plus.GRPOConfig)}[kind]
    config = {k: kwargs.pop(k) for k in list(kwargs) if k in {f for f in config_cls.__dataclass_fields__}}
    args = config_cls(output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=4, max_steps=steps, logging_steps=1, save_strategy="no", report_to="none",
                      disable_tqdm=True, bf16=False, beta=0.05, **config)
    return cls(AutoModelForCausalLM.from_pretrained(tiny_model_path), args=args,
               train_dataset=Dataset.from_list([{"prompt": p} for p in prompts()]),
               processing_class=AutoTokenizer.from_pretrained(tiny_model_path), **kwargs)


# -- the shipped recipes, through the CLI: they train and learn --------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_recipe_trains_through_the_cli_and_learns(kind, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", f"tiny-{kind}", "--output-dir", str(out)]) == 0, capsys.readouterr().err
    rows = [r for r in logged(out) if "reward" in r]
    rewards = [r["reward"] for r in rows]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    print(f"{kind}: mean reward of the first 3 logged steps {first:.3f}, of the last 3 {last:.3f}")
    assert last > first + 0.04 and last > 1.5 * first, rewards  # the share of e's goes up
    assert all("reward/letter_e" in r and "beta" in r for r in rows)  # per source, and the schedule's beta
    assert len({round(r["beta"], 6) for r in rows}) > 3  # the adaptive controller moved it
    state = json.loads((out / f"{kind}_state.json").read_text())
    assert state["schedule"]["value"] == pytest.approx(state["beta"]) and state["kl_stats"]["samples"] == 40 * 16
    assert json.loads((out / "run_info.json").read_text())["trainer"] == kind
    report = json.loads((out / "filter_report.json").read_text())
    assert report["train"]["rows_in"] == 240 and report["rollouts"]["rows_in"] == 40 * 16
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)


# -- the KL schedule drives beta; sources, data filters and hooks --------------------------------


class Hooks:
    def __init__(self):
        self.created, self.scored, self.steps = [], [], []

    @trl_plus.hookimpl
    def trl_plus_trainer_created(self, trainer, recipe):
        self.created.append(type(trainer).__name__)

    @trl_plus.hookimpl
    def trl_plus_rollout_scored(self, trainer, step, prompts, completions, rewards):
        self.scored.append((step, len(prompts), len(completions), {k: len(v) for k, v in rewards.items()}, rewards))

    @trl_plus.hookimpl
    def trl_plus_step_end(self, trainer, step, metrics):
        self.steps.append((step, metrics))


@pytest.mark.parametrize("kind", KINDS)
def test_the_schedule_drives_beta_and_each_source_is_logged(kind, tmp_path, tiny_model_path, plugin_manager,
                                                           register_plugin):
    hooks = Hooks()
    register_plugin(hooks)
    schedule = {"name": "linear", "start": 0.2, "end": 0.05, "steps": 3}
    trainer = make(kind, tmp_path, tiny_model_path, steps=5, rewards=[letter("e", "e", 2.0), letter("a", "a", 0.5)],
                   kl=schedule, filters=[{"name": "regex", "column": "prompt", "pattern": "book", "keep": False}],
                   plugin_manager=plugin_manager)
    used = []
    step = trainer.training_step

    def spy(*args, **kwargs):  # beta as TRL reads it in the step (RLOO: the rollout's penalty; GRPO: the loss)
        used.append((trainer.state.global_step, trainer.beta))
        return step(*args, **kwargs)

    trainer.training_step = spy
    trainer.train()

    def linear(s):
        return 0.2 + (0.05 - 0.2) * min(s, 3) / 3

    assert used == [(s, pytest.approx(linear(s))) for s in range(5)]
    rows = [r for r in logged(trainer) if "loss" in r]
    assert [r["beta"] for r in rows] == [pytest.approx(linear(r["step"] - 1)) for r in rows]
    for r in rows:  # per source, and the total weighted as the recipe says
        assert r["reward"] == pytest.approx(2.0 * r["reward/e"] + 0.5 * r["reward/a"], abs=1e-6)
        assert r["rewards/e/mean"] == pytest.approx(r["reward/e"])

    assert hooks.created == [f"{kind.upper()}Trainer"]
    assert [s for s, *_ in hooks.scored] == [0, 1, 2, 3, 4]
    assert all(n == 8 and m == 8 and lengths == {"reward": 8, "reward/e": 8, "reward/a": 8}
               for _, n, m, lengths, _ in hooks.scored)
    assert [s for s, _ in hooks.steps][:5] == [1, 2, 3, 4, 5] and "beta" in hooks.steps[0][1]

    report = json.loads((tmp_path / "run" / "filter_report.json").read_text())["train"]
    dropped = sum("book" in p for p in prompts())
    assert dropped and report["rows_out"] == report["rows_in"] - dropped
    assert report["filters"][0]["name"] == "regex" and report["filters"][0]["dropped"] == dropped


# -- rollout filters: a dropped completion gets zero advantage ------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_rollout_filters_drop_completions_with_zero_advantage(kind, tmp_path, tiny_model_path):
    trainer = make(kind, tmp_path, tiny_model_path, steps=3, rewards=[letter("aeiou", "vowels")],
                   rollout_filters=[{"name": "reward_range", "max": 0.25}])
    trainer.train()
    scores = list(trainer._logs["rewards"]["vowels"])  # the last rollout: the sources' own scores
    advantages = list(trainer._logs["advantages"])
    assert len(scores) == len(advantages) == 8 and any(s > 0.25 for s in scores)
    assert all(a == 0.0 for s, a in zip(scores, advantages) if s > 0.25)
    rows = [r for r in logged(trainer) if "loss" in r]
    assert rows[-1]["rollouts/dropped_total"] == sum(r["rollouts/dropped"] for r in rows) > 0
    assert rows[-1]["rollouts/dropped_total/reward_range"] == rows[-1]["rollouts/dropped_total"]
    assert all(r["reward"] == pytest.approx(r["reward/vowels"]) for r in rows)  # dropped ones still counted
    report = json.loads((tmp_path / "run" / "filter_report.json").read_text())["rollouts"]
    assert report["rows_in"] == 24 and report["rows_in"] - report["rows_out"] == rows[-1]["rollouts/dropped_total"]


# -- the nothing-scored guard, and what the kinds refuse ----------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_that_scores_nothing_stops_after_three_batches(kind, tmp_path, capsys):
    reward = tmp_path / "silent_reward.py"
    reward.write_text("def score(prompts, completions, **kw):\n    return [None] * len(completions)\n")
    out = tmp_path / "out"
    code = main(["train", f"tiny-{kind}", "--output-dir", str(out), "--set", f"{kind}.max_steps=6",
                 "--set", f"{kind}.per_device_train_batch_size=8", "--set", f"rewards.0.function={reward}:score",
                 "--set", "rewards.0.kwargs={}"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no completion was scored in 3 consecutive rollout batches of 8 completions" in err, err[-2000:]
    assert f"python: {reward}:score" in err and f"{kind}.max_unscored_batches" in err and "Traceback" not in err
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_a_schedule_without_a_reference_or_a_recipe_without_rewards_is_refused(kind, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", f"tiny-{kind}", "--output-dir", str(out), "--set", f"{kind}.beta=0"]) == 2
    assert "kl: a KL schedule needs the reference model, which beta 0 turns off" in capsys.readouterr().err
    assert main(["train", f"tiny-{kind}", "--output-dir", str(tmp_path / "o2"), "--set", "rewards=[]",
                 "--set", "kl=null", "--set", "rollout_filters=[]"]) == 2
    assert f"rewards: trainer '{kind}' needs at least one reward source" in capsys.readouterr().err


def test_grpo_default_beta_zero_with_a_schedule_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch):
    from trl_plus import loading

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loading, "load_model", no_model)
    recipe = (ROOT / "recipes" / "tiny-grpo.yaml").read_text().replace("  beta: 0.05", "")
    path = tmp_path / "grpo.yaml"
    path.write_text(recipe)
    for name in ("toy_rewards.py", "data"):
        (tmp_path / name).symlink_to(ROOT / "recipes" / name)
    assert main(["train", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    assert "kl: a KL schedule needs the reference model" in capsys.readouterr().err


# -- SIGKILL, then --resume: the last checkpoint, with the schedule's state ------------------------


def start(kind: str, out: Path, **settings) -> subprocess.Popen:
    """``trl-plus train tiny-KIND`` in a subprocess (as tests/test_resume.py starts one)."""
    import os

    sets = {"max_steps": LONG, "logging_steps": 1, "disable_tqdm": "true", **settings}
    cmd = [sys.executable, "-m", "trl_plus", "train", f"tiny-{kind}", "--output-dir", str(out)]
    for key, value in sets.items():
        cmd += ["--set", f"{kind}.{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(out.parent / f"{out.name}.stdout", "w") as stdout, open(out.parent / f"{out.name}.stderr", "w") as stderr:
        return subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)


@pytest.mark.parametrize("kind", KINDS)
def test_after_sigkill_resume_continues_from_the_last_checkpoint_with_the_schedule(kind, tmp_path, monkeypatch,
                                                                                  capsys):
    out = tmp_path / "run"
    proc = start(kind, out, save_steps=4)
    step, checkpoint = kill_after_checkpoint(proc, out)
    state = json.loads((checkpoint / f"{kind}_state.json").read_text())
    assert state["schedule"]["_last_count"] > 0  # the controller had moved on

    cls = {"rloo": trl_plus.RLOOTrainer, "grpo": trl_plus.GRPOTrainer}[kind]
    load = cls._load_from_checkpoint
    restored = {}

    def spy(self, path, model=None):
        load(self, path, model)
        restored.update(path=path, beta=self.beta, schedule=self.kl_schedule.fn.state(), stats=dict(self._kl_stats))

    monkeypatch.setattr(cls, "_load_from_checkpoint", spy)
    args = ["train", f"tiny-{kind}", "--output-dir", str(out), "--resume"]
    for setting in (f"max_steps={step + 3}", "logging_steps=1", "save_steps=4", "disable_tqdm=true"):
        args += ["--set", f"{kind}.{setting}"]
    assert main(args) == 0, capsys.readouterr().err + output(out, "stderr")[-2000:]

    assert restored["path"] == str(checkpoint)
    assert restored["beta"] == state["beta"] and restored["schedule"] == state["schedule"]
    assert restored["stats"]["samples"] == state["kl_stats"]["samples"] == step * 16
    info = json.loads((out / "run_info.json").read_text())
    assert info["resumed_from"] == {"checkpoint": str(checkpoint), "global_step": step}
    history = logged(out)
    before = logged(checkpoint)
    assert history[: len(before)] == before
    resumed = [r for r in history[len(before):] if "loss" in r]
    assert [r["step"] for r in resumed] == [step + 1, step + 2, step + 3]
    # the first step after the resume runs at the checkpoint's beta, moved by the schedule from there
    assert abs(resumed[0]["beta"] - state["beta"]) < 0.2 * state["beta"] and resumed[0]["beta"] != 0.05
    final = json.loads((out / f"{kind}_state.json").read_text())
    assert final["kl_stats"]["samples"] == (step + 3) * 16


# -- drop-ins: plain TRL arguments, the same training ---------------------------------------------


def letter_e(prompts, completions, **kwargs):
    return [c.count("e") / max(len(c), 1) for c in completions]


@pytest.mark.parametrize("kind", KINDS)
def test_drop_in_with_plain_trl_arguments_trains_as_trl_does(kind, tmp_path, tiny_model_path, tiny_reward_model_path):
    import trl
    from datasets import Dataset

    parent, config_cls = {"rloo": (trl.RLOOTrainer, trl.RLOOConfig), "grpo": (trl.GRPOTrainer, trl.GRPOConfig)}[kind]
    ours = {"rloo": trl_plus.RLOOTrainer, "grpo": trl_plus.GRPOTrainer}[kind]
    assert issubclass(ours, parent)
    dataset = Dataset.from_list([{"prompt": p} for p in prompts(16)])

    def run(cls, out):
        args = config_cls(output_dir=str(out), per_device_train_batch_size=8, num_generations=4,
                          max_completion_length=4, max_steps=2, logging_steps=1, save_strategy="no",
                          report_to="none", disable_tqdm=True, bf16=False, seed=3, beta=0.04,
                          reward_weights=[1.0, 0.5])
        # all positional, as TRL's signature orders them: a model by name, a plain list of reward
        # functions (a function and a reward model by path), the config, the dataset
        trainer = cls(str(tiny_model_path), [letter_e, str(tiny_reward_model_path)], args, dataset)
        trainer.train()
        return trainer, [r for r in logged(trainer) if "loss" in r]

    theirs, expected = run(parent, tmp_path / "trl")
    mine, got = run(ours, tmp_path / "ours")
    assert type(mine.args) is config_cls  # a plain TRL config is used as it is
    names = theirs.reward_func_names
    assert mine.reward_func_names == names == ["letter_e", Path(tiny_reward_model_path).name]
    for a, b in zip(expected, got, strict=True):
        for key in ("loss", "reward", "kl", f"rewards/{names[0]}/mean", f"rewards/{names[1]}/mean"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
        assert b[f"reward/{names[0]}"] == pytest.approx(a[f"rewards/{names[0]}/mean"])  # plus trl-plus's logs
        assert b["beta"] == 0.04
    mine.save_model()
    assert json.loads((tmp_path / "ours" / f"{kind}_state.json").read_text())["beta"] == 0.04


@pytest.mark.parametrize("kind", KINDS)
def test_python_use_rewards_instead_of_reward_funcs(kind, tmp_path, tiny_model_path):
    from trl_plus.errors import RecipeError

    with pytest.raises(RecipeError, match="give rewards= or reward_funcs=, not both"):
        make(kind, tmp_path, tiny_model_path, rewards=[letter("e", "e")], reward_funcs=[letter_e])
    with pytest.raises(RecipeError, match="leave reward_weights unset"):
        make(kind, tmp_path, tiny_model_path, rewards=[letter("e", "e")], reward_weights=[1.0])
    if kind == "rloo":
        with pytest.raises(RecipeError, match="needs rewards= .* or reward_funcs="):
            make(kind, tmp_path, tiny_model_path)
    with pytest.raises(ValueError, match="max_unscored_batches must be an integer >= 0"):
        make(kind, tmp_path, tiny_model_path, rewards=[letter("e", "e")], max_unscored_batches=-1)


# -- the kinds are registered and exported --------------------------------------------------------


def test_plugins_lists_rloo_and_grpo(capsys, plugin_manager):
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert "trainer kinds: dpo, grpo, online_dpo, ppo, rloo" in text
    assert "rloo (trains on prompts): " in text and "grpo (trains on prompts): " in text
    kinds = plugin_manager.trainer_kinds
    assert kinds["rloo"].trainer_class is trl_plus.RLOOTrainer and kinds["rloo"].config_class is trl_plus.RLOOConfig
    assert kinds["grpo"].trainer_class is trl_plus.GRPOTrainer and kinds["grpo"].config_class is trl_plus.GRPOConfig
    assert kinds["rloo"].columns == kinds["grpo"].columns == ("prompt",)
    assert {"RLOOTrainer", "RLOOConfig", "GRPOTrainer", "GRPOConfig"} <= set(trl_plus.__all__)
