"""The ``online_dpo`` trainer kind: its shipped recipe trains through the CLI and learns
round over round, the reference stays the initial model, each round's pairs are logged, a
run killed with SIGKILL resumes at the next round (and one stopped inside a round draws
that round afresh), the rollout and data filters and the hooks see each round, and what
it refuses names the key. Also the sampler it shares with the pipeline's pairs stage."""

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
RECIPE = "tiny-online-dpo"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models on a shared CPU: one torch thread."""


def logged(folder) -> list[dict]:
    return json.loads((Path(folder) / "trainer_state.json").read_text())["log_history"]


def rounds_of(folder) -> list[dict]:
    return json.loads((Path(folder) / "online_dpo_state.json").read_text())["rounds"]


def train(out, *settings: str, resume=None) -> list[str]:
    args = ["train", RECIPE, "--output-dir", str(out)]
    for setting in settings:
        args += ["--set", setting]
    if resume is not None:
        args += ["--resume"] + ([str(resume)] if resume is not True else [])
    return args


# -- the shipped recipe, through the CLI: it trains, learns, and keeps its reference ---------------


def test_shipped_recipe_trains_through_the_cli_learns_and_keeps_the_reference(tmp_path, capsys, monkeypatch):
    import torch

    cls = trl_plus.OnlineDPOTrainer
    seen = {}
    make_loader = cls.get_train_dataloader

    def spy(self):  # at the start of training: the trainer, and its reference and policy as they begin
        seen.update(trainer=self, ref={k: v.clone() for k, v in self.ref_model.state_dict().items()},
                    policy={k: v.clone() for k, v in self.model.state_dict().items()})
        return make_loader(self)

    monkeypatch.setattr(cls, "get_train_dataloader", spy)
    out = tmp_path / "run"
    assert main(train(out)) == 0, capsys.readouterr().err

    # learning happens: the round-1 samples score below the last round's (seeded)
    rounds = rounds_of(out)
    assert [r["online_dpo/round"] for r in rounds] == [1, 2, 3, 4, 5, 6]
    first, last = rounds[0]["reward"], rounds[-1]["reward"]
    print(f"online_dpo: mean reward of the round-1 samples {first:.3f}, of the round-6 samples {last:.3f}")
    assert last > first + 0.05 and last > 2 * first, [r["reward"] for r in rounds]

    # the reference is the initial model, unchanged; the policy started there and moved
    trainer = seen["trainer"]
    ref_now = trainer.ref_model.state_dict()
    assert seen["ref"].keys() == seen["policy"].keys() == ref_now.keys()
    assert all(torch.equal(seen["ref"][k], seen["policy"][k]) for k in ref_now)
    assert all(torch.equal(seen["ref"][k], ref_now[k]) for k in ref_now)
    policy = trainer.model.state_dict()
    assert any(not torch.equal(policy[k], ref_now[k]) for k in ref_now)

    # each round's pairs, round number, reward per source, with every training row
    rows = [r for r in logged(out) if "loss" in r]
    assert len(rows) == 12  # 24 steps, logged every 2
    assert [r["online_dpo/round"] for r in rows] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    for row in rows:
        assert 0 < row["online_dpo/pairs"] <= row["online_dpo/pairs_formed"] <= 16
        assert row["online_dpo/completions"] == 64 and row["reward/letter_e"] == pytest.approx(row["reward"])
        assert row["beta"] == pytest.approx(0.2 - 0.15 * (row["step"] - 1) / 24)  # the linear schedule drives it
    state = json.loads((out / "online_dpo_state.json").read_text())
    assert state["rounds_done"] == 6 and state["round_step"] == 0 and state["samples"] == 6 * 64
    assert state["beta"] == pytest.approx(0.05625) and state["schedule"] == {"start": 0.2, "end": 0.05, "steps": 24}
    assert json.loads((out / "run_info.json").read_text())["trainer"] == "online_dpo"
    report = json.loads((out / "filter_report.json").read_text())
    assert report["train"]["rows_in"] == 240 and report["pairs"]["filters"][0]["name"] == "distinct_pair"
    if (out / "compute.json").exists():  # the compute record counts the sampled tokens
        assert json.loads((out / "compute.json").read_text())["generated_tokens"] > 0
    from trl_plus.run_folder.trainer_of import folder_trainer

    assert folder_trainer(out) == "online_dpo" and folder_trainer(out / "checkpoint-24") == "online_dpo"


# -- SIGKILL, then --resume: the next round --------------------------------------------------------


def start(out: Path, **settings) -> subprocess.Popen:
    """``trl-plus train tiny-online-dpo`` in a subprocess (as tests/test_resume.py starts one)."""
    import os

    cmd = [sys.executable, "-m", "trl_plus", *train(out, *(f"online_dpo.{k}={v}" for k, v in settings.items()))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(out.parent / f"{out.name}.stdout", "w") as stdout, open(out.parent / f"{out.name}.stderr", "w") as stderr:
        return subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)


def test_after_sigkill_resume_continues_at_the_next_round(tmp_path, monkeypatch, capsys):
    from trl_plus.trainers import online_rounds

    out = tmp_path / "run"
    proc = start(out, rounds=10_000, logging_steps=1, disable_tqdm="true")
    step, checkpoint = kill_after_checkpoint(proc, out)
    done = step // 4  # rounds finished: a checkpoint every round (save_steps = steps_per_round)
    state = json.loads((checkpoint / "online_dpo_state.json").read_text())
    assert state["rounds_done"] == done >= 1 and state["round_step"] == 0
    assert [r["online_dpo/round"] for r in state["rounds"]] == list(range(1, done + 1))
    before = logged(checkpoint)  # (the resumed run's own checkpoints replace it: save_total_limit 2)

    drawn = []
    draw = online_rounds.draw_round

    def spy(trainer, index):
        drawn.append(index)
        return draw(trainer, index)

    monkeypatch.setattr(online_rounds, "draw_round", spy)
    args = train(out, f"online_dpo.rounds={done + 2}", "online_dpo.logging_steps=1", "online_dpo.disable_tqdm=true",
                 resume=True)
    assert main(args) == 0, capsys.readouterr().err + output(out, "stderr")[-2000:]

    assert drawn == [done, done + 1]  # the two rounds after the checkpoint, none before again
    info = json.loads((out / "run_info.json").read_text())
    assert info["resumed_from"] == {"checkpoint": str(checkpoint), "global_step": step}
    history = logged(out)
    assert history[: len(before)] == before
    resumed = [r for r in history[len(before):] if "loss" in r]
    assert [r["step"] for r in resumed] == list(range(step + 1, step + 9))
    assert resumed[0]["beta"] == pytest.approx(0.2 - 0.15 * min(step, 24) / 24)  # the schedule goes on from there
    assert [r["online_dpo/round"] for r in resumed] == [done + 1] * 4 + [done + 2] * 4
    final = json.loads((out / "online_dpo_state.json").read_text())
    assert [r["online_dpo/round"] for r in final["rounds"]] == list(range(1, done + 3))
    assert final["rounds"][:done] == state["rounds"] and final["samples"] == (done + 2) * 64


def test_a_resume_inside_a_round_draws_that_round_afresh_for_its_remaining_steps(tmp_path, monkeypatch, capsys):
    from trl_plus.trainers import online_rounds

    first = tmp_path / "first"
    assert main(train(first, "online_dpo.rounds=1", "online_dpo.save_steps=2", "online_dpo.logging_steps=1",
                      "online_dpo.disable_tqdm=true")) == 0, capsys.readouterr().err
    drawn = []
    draw = online_rounds.draw_round

    def spy(trainer, index):
        drawn.append((index, trainer.state.global_step))
        return draw(trainer, index)

    monkeypatch.setattr(online_rounds, "draw_round", spy)
    out = tmp_path / "again"
    assert main(train(out, "online_dpo.rounds=2", "online_dpo.save_steps=2", "online_dpo.logging_steps=1",
                      "online_dpo.disable_tqdm=true", resume=first / "checkpoint-2")) == 0, capsys.readouterr().err
    assert drawn == [(0, 2), (1, 4)]  # round 1 again, for its steps 3 and 4; then round 2
    rows = [r for r in logged(out) if "loss" in r]
    assert [(r["step"], r["online_dpo/round"]) for r in rows] == [(1, 1), (2, 1),  # the checkpoint's log
                                                                  (3, 1), (4, 1), (5, 2), (6, 2), (7, 2), (8, 2)]
    rounds = rounds_of(out)
    assert [(r["online_dpo/round"], r["step"]) for r in rounds] == [(1, 2), (2, 4)]  # round 1 as it was redrawn


# -- the filters and hooks see every round ----------------------------------------------------------


class Hooks:
    def __init__(self):
        self.created, self.scored = [], []

    @trl_plus.hookimpl
    def trl_plus_trainer_created(self, trainer, recipe):
        self.created.append(type(trainer).__name__)

    @trl_plus.hookimpl
    def trl_plus_rollout_scored(self, trainer, step, prompts, completions, rewards):
        self.scored.append((step, len(prompts), len(completions), sorted(rewards)))


def prompts(n: int = 32) -> list[str]:
    rows = (ROOT / "recipes" / "data" / "tiny_prefs.jsonl").read_text().splitlines()
    return [json.loads(line)["prompt"] for line in rows if line][:n]


def letter(chars: str, alias: str) -> dict:
    return {"name": "python", "function": f"{TOY}:char_share", "kwargs": {"chars": chars}, "alias": alias}


@pytest.fixture
def drawn_pairs(monkeypatch) -> list[dict]:
    """Every preference pair the trainer's rounds draw, in order (a spy on ``online_rounds.draw_round``)."""
    from trl_plus.trainers import online_rounds

    pairs = []
    draw = online_rounds.draw_round

    def spy(trainer, index):
        drawn = draw(trainer, index)
        pairs.extend(drawn.pairs)
        return drawn

    monkeypatch.setattr(online_rounds, "draw_round", spy)
    return pairs


def test_filters_and_hooks_see_every_round(tmp_path, tiny_model_path, plugin_manager, register_plugin, drawn_pairs):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pairs = drawn_pairs
    hooks = Hooks()
    register_plugin(hooks)
    args = trl_plus.OnlineDPOConfig(
        output_dir=str(tmp_path / "run"), rounds=2, steps_per_round=2, prompts_per_round=8, samples_per_prompt=3,
        max_completion_length=6, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, bf16=False, max_length=64)
    trainer = trl_plus.OnlineDPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_path), AutoModelForCausalLM.from_pretrained(tiny_model_path),
        args=args, train_dataset=Dataset.from_list([{"prompt": p} for p in prompts()]),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path),
        rewards=[letter("e", "e"), letter("a", "a")], plugin_manager=plugin_manager,
        rollout_filters=[{"name": "reward_range", "max": 0.25}],
        filters=[{"name": "regex", "column": "prompt", "pattern": "book", "keep": False}])
    trainer.train()
    assert hooks.created == ["OnlineDPOTrainer"]
    assert hooks.scored == [(0, 24, 24, ["reward", "reward/a", "reward/e"]),
                            (2, 24, 24, ["reward", "reward/a", "reward/e"])]
    rows = [r for r in trainer.state.log_history if "loss" in r]
    assert [r["online_dpo/round"] for r in rows] == [1, 1, 2, 2]
    assert all(r["reward"] == pytest.approx(r["reward/e"] + r["reward/a"]) for r in rows)
    # the rollout filter dropped completions out of the pairs; the data filters ran on the pairs
    report = json.loads((tmp_path / "run" / "filter_report.json").read_text())
    dropped = report["rollouts"]["rows_in"] - report["rollouts"]["rows_out"]
    assert report["rollouts"]["rows_in"] == 48 and dropped == rows[-1]["rollouts/dropped_total"] > 0
    assert pairs and all(p["chosen_reward"] <= 0.25 for p in pairs)
    regex = report["pairs"]["filters"][0]  # the last round's pairs
    assert regex["name"] == "regex" and report["pairs"]["rows_out"] == report["pairs"]["rows_in"] - regex["dropped"]


def test_chat_prompts_sample_through_the_chat_template_and_pair_as_messages(tmp_path, tiny_model_path, drawn_pairs):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pairs = drawn_pairs
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant:{% endif %}")
    args = trl_plus.OnlineDPOConfig(
        output_dir=str(tmp_path / "run"), rounds=1, steps_per_round=2, samples_per_prompt=3, max_completion_length=6,
        per_device_train_batch_size=4, save_strategy="no", report_to="none", disable_tqdm=True, bf16=False)
    chats = [{"prompt": [{"role": "user", "content": p}]} for p in prompts(8)]
    trainer = trl_plus.OnlineDPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_path), AutoModelForCausalLM.from_pretrained(tiny_model_path),
        args=args, train_dataset=Dataset.from_list(chats), processing_class=tokenizer, rewards=[letter("e", "e")])
    trainer.train()
    assert pairs and trainer.state.global_step == 2
    assert all(p["prompt"][0]["role"] == "user" and p["chosen"][0]["role"] == p["rejected"][0]["role"] == "assistant"
               for p in pairs)


# -- what is refused, naming the key --------------------------------------------------------------


@pytest.mark.parametrize("setting, message", [
    ("online_dpo.samples_per_prompt=1", "online_dpo.samples_per_prompt: OnlineDPOConfig rejected the section: "
                                        "samples_per_prompt must be an integer >= 2 (a pair needs two completions"),
    ("online_dpo.max_steps=10", "online_dpo.max_steps: OnlineDPOConfig rejected the section: max_steps must be "
                                "rounds x steps_per_round (6 x 4 = 24) when both are set, got 10"),
    ("online_dpo.precompute_ref_log_probs=true", "online_dpo.precompute_ref_log_probs: OnlineDPOConfig rejected the "
                                                 "section: precompute_ref_log_probs cannot be used with online DPO"),
])
def test_recipe_errors_name_the_key(setting, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(train(out, setting)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_recipe_without_rewards_is_refused(tmp_path, capsys):
    assert main(train(tmp_path / "out", "rewards=[]")) == 2
    assert "rewards: trainer 'online_dpo' needs at least one reward source" in capsys.readouterr().err


def test_a_reward_that_scores_nothing_stops_the_run(tmp_path, capsys):
    reward = tmp_path / "silent_reward.py"
    reward.write_text("def score(prompts, completions, **kw):\n    return [None] * len(completions)\n")
    out = tmp_path / "out"
    code = main(train(out, f"rewards.0.function={reward}:score", "rewards.0.kwargs={}"))
    err = capsys.readouterr().err
    assert code == 1
    assert "no completion was scored in 3 consecutive rollout batches of 64 completions" in err, err[-2000:]
    assert "online_dpo.max_unscored_batches" in err and "Traceback" not in err
    assert not (out / "model.safetensors").exists()


def test_a_round_of_ties_only_stops_the_run_saying_why(tmp_path, capsys):
    reward = tmp_path / "flat_reward.py"
    reward.write_text("def score(prompts, completions, **kw):\n    return [1.0] * len(completions)\n")
    code = main(train(tmp_path / "out", f"rewards.0.function={reward}:score", "rewards.0.kwargs={}"))
    err = capsys.readouterr().err
    assert code == 2  # a data error
    assert "online DPO round 1: 3 draws of 4 completions for each of 16 prompts gave no pair to train on" in err
    assert "raise online_dpo.samples_per_prompt or online_dpo.temperature" in err and "Traceback" not in err


def test_python_use_is_refused_without_what_online_dpo_needs(tmp_path, tiny_model_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from trl_plus.errors import RecipeError

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    data = Dataset.from_list([{"prompt": p} for p in prompts(4)])
    with pytest.raises(TypeError, match="needs args=, an OnlineDPOConfig"):
        trl_plus.OnlineDPOTrainer(model, args=trl_plus.DPOConfig(str(tmp_path), bf16=False), train_dataset=data,
                                  rewards=[letter("e", "e")])
    args = trl_plus.OnlineDPOConfig(str(tmp_path), rounds=1, report_to="none", bf16=False)
    with pytest.raises(RecipeError, match="needs rewards="):
        trl_plus.OnlineDPOTrainer(model, args=args, train_dataset=data)
    with pytest.raises(ValueError, match="sync_ref_model cannot be used with online DPO"):
        trl_plus.OnlineDPOConfig(str(tmp_path), rounds=1, sync_ref_model=True)
    with pytest.raises(ValueError, match="rounds must be set"):
        trl_plus.OnlineDPOConfig(str(tmp_path))
    assert trl_plus.OnlineDPOConfig(str(tmp_path), max_steps=10, steps_per_round=4, bf16=False).round_count == 3


# -- registered and exported ----------------------------------------------------------------------


def test_plugins_lists_online_dpo(capsys, plugin_manager):
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert "trainer kinds: dpo, grpo, online_dpo, ppo, rloo" in text
    assert "online_dpo (trains on prompts): online (iterative) DPO" in text
    kind = plugin_manager.trainer_kinds["online_dpo"]
    assert kind.trainer_class is trl_plus.OnlineDPOTrainer and kind.config_class is trl_plus.OnlineDPOConfig
    assert kind.columns == ("prompt",) and kind.kl_field == "beta"
    assert issubclass(trl_plus.OnlineDPOTrainer, trl_plus.DPOTrainer)
    assert {"OnlineDPOTrainer", "OnlineDPOConfig"} <= set(trl_plus.__all__)


# -- the sampler, shared with the pipeline's pairs stage ------------------------------------------


def test_the_pairs_stage_and_online_dpo_share_one_sampler(tiny_model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_plus.pipeline import sampling as pipeline_sampling
    from trl_plus.trainers import sampling

    assert pipeline_sampling.sample is sampling.sample
    assert pipeline_sampling.best_worst_pairs is sampling.best_worst_pairs
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    tokenizer.padding_side = "right"
    texts, tokens = sampling.sample(model, tokenizer, prompts(5), max_new_tokens=4, seed=3, batch_size=2)
    again, _ = sampling.sample(model, tokenizer, prompts(5), max_new_tokens=4, seed=3, batch_size=2)
    assert texts == again and len(texts) == 5 and 0 < tokens <= 20
    assert tokenizer.padding_side == "right"  # given back


def test_best_worst_pairs_skip_ties_and_unscored():
    from trl_plus.trainers.sampling import best_worst_pairs

    rows = best_worst_pairs(
        ["p1", "p2", "p3", "p4"],
        [["a", "b", "c"], ["x", "y"], ["s", "t"], ["same", "same"]],
        [[0.2, None, 0.9], [0.5, 0.5], [None, 1.0], [0.1, 0.7]],
    )
    assert rows == [{"prompt": "p1", "chosen": "c", "rejected": "a", "chosen_reward": 0.9, "rejected_reward": 0.2}]
    assert best_worst_pairs(["p"], [["a", "b"]], [[0.1, 0.3]], min_margin=0.5) == []
