"""Reward sources that answer the wrong thing, or nothing, fail loudly: named by recipe key
and reference, described by type and size (never the payload), and a run that scores
nothing stops instead of saving a model trained on nothing."""

from __future__ import annotations

import pytest

from trl_plus.cli import main
from trl_plus.errors import RecipeError, RewardSourceError

SECRET_PAYLOAD = "payload-text-that-must-not-be-echoed"


def returns_dict(prompts, completions, **kw):
    return {SECRET_PAYLOAD: 1.0, "b": 2.0}


def returns_scalar(prompts, completions, **kw):
    return 0.5


def returns_string(prompts, completions, **kw):
    return SECRET_PAYLOAD


def returns_too_few(prompts, completions, **kw):
    return [1.0] * (len(completions) - 1)


def returns_text_entry(prompts, completions, **kw):
    return [1.0] + [SECRET_PAYLOAD] * (len(completions) - 1)


def returns_none(prompts, completions, **kw):
    return None


def returns_matrix(prompts, completions, **kw):
    import torch

    return torch.zeros(len(completions), 2)


def returns_some_none(prompts, completions, **kw):
    import numpy as np

    return [None, np.float32(2.0), 3]


@pytest.mark.parametrize(
    "fn, what",
    [
        ("returns_dict", "returned a dict with 2 keys instead of a list of 3 scores"),
        ("returns_scalar", "returned a float instead of a list of 3 scores"),
        ("returns_string", f"returned a str of {len(SECRET_PAYLOAD)} characters instead of a list of 3 scores"),
        ("returns_too_few", "returned 2 scores for 3 completions"),
        ("returns_text_entry", "for completion 1 (a str of"),
        ("returns_none", "returned None instead of a list of 3 scores"),
        ("returns_matrix", "returned a Tensor of shape (3, 2) instead of a list of 3 scores"),
    ],
)
def test_bad_answers_name_the_source_and_what_came(plugin_manager, fn, what):
    mix = plugin_manager.components().reward_mix([{"name": "python", "function": f"{__name__}:{fn}"}])
    with pytest.raises(RewardSourceError) as info:
        mix(["p"] * 3, ["a", "b", "c"])
    message = str(info.value)
    assert f"reward source rewards[0] (python: {__name__}:{fn})" in message
    assert what in message
    if fn != "returns_text_entry":  # one entry is shown shortened; a whole answer never is
        assert SECRET_PAYLOAD not in message


def test_alias_is_named_with_the_reference(plugin_manager):
    spec = {"name": "python", "function": f"{__name__}:returns_scalar", "alias": "judge"}
    mix = plugin_manager.components().reward_mix([{"name": "python", "function": f"{__name__}:returns_some_none"}, spec])
    with pytest.raises(RewardSourceError, match=rf"rewards\[1\] 'judge' \(python: {__name__}:returns_scalar\)"):
        mix(["p"] * 3, ["a", "b", "c"])


def test_none_entries_are_unscored_and_numbers_of_any_kind_are_scores(plugin_manager):
    mix = plugin_manager.components().reward_mix([{"name": "python", "function": f"{__name__}:returns_some_none"}])
    assert mix(["p"] * 3, ["a", "b", "c"]) == [None, 2.0, 3.0]


@pytest.mark.parametrize("body, exc", [("x = 1 / 0\n", "ZeroDivisionError: division by zero"),
                                       ("def broken(:\n", "SyntaxError"),
                                       ("raise SystemExit(3)\n", "SystemExit: 3")])
def test_module_raising_at_import_is_named(plugin_manager, tmp_path, body, exc):
    module = tmp_path / "exploding_reward.py"
    module.write_text("import os\n" + body + "def score(prompts, completions):\n    return [1.0] * len(completions)\n")
    ref = f"{module}:score"
    with pytest.raises(RecipeError) as info:
        plugin_manager.components().reward_mix([{"name": "python", "function": ref}])
    message = str(info.value)
    assert f"importing {str(module)!r} for {ref!r} raised {exc}" in message
    if exc.startswith("ZeroDivisionError"):
        assert "exploding_reward.py line 2" in message


# ---------------------------------------------------------------------------------------
# a run that scores nothing stops: PPO on the tiny model, one rollout batch per step
# ---------------------------------------------------------------------------------------


def _ppo(tmp_path, tiny_model_path, steps: int, **kwargs):
    import json
    from pathlib import Path

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import trl_plus

    rows = Path(__file__).resolve().parents[1] / "recipes" / "data" / "tiny_prefs.jsonl"
    prompts = [json.loads(line)["prompt"] for line in rows.read_text().splitlines() if line][:32]
    config = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("rewards", "reward_funcs")}
    args = trl_plus.PPOConfig(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, num_generations=2,
        max_completion_length=4, max_steps=steps, logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, bf16=False, **config,
    )
    return trl_plus.PPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_path), args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path), **kwargs,
    )


class Scorer:
    """Answers None for every completion in the batches listed in ``silent`` (1-based)."""

    def __init__(self, silent):
        self.silent, self.batches = silent, 0
        self.__name__ = "sometimes_silent"

    def __call__(self, prompts, completions, **kw):
        self.batches += 1
        silent = self.silent is True or self.batches in self.silent
        return [None if silent else float(len(c)) for c in completions]


def test_run_that_scores_nothing_fails_after_three_batches(tmp_path, tiny_model_path, one_thread):
    scorer = Scorer(silent=True)
    trainer = _ppo(tmp_path, tiny_model_path, steps=6, rewards=[scorer])
    with pytest.raises(RewardSourceError, match=r"no completion was scored in 3 consecutive rollout batches") as info:
        trainer.train()
    assert "rewards[0] 'sometimes_silent'" in str(info.value) and "max_unscored_batches" in str(info.value)
    assert scorer.batches == 3
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_plain_trl_reward_funcs_answering_none_fail_too(tmp_path, tiny_model_path, one_thread):
    def silent(prompts, completions, **kw):
        return [None] * len(completions)

    trainer = _ppo(tmp_path, tiny_model_path, steps=4, reward_funcs=[silent], max_unscored_batches=2)
    with pytest.raises(RewardSourceError, match=r"in 2 consecutive rollout batches.*\(silent\)"):
        trainer.train()


def test_sometimes_unscored_keeps_training_and_zero_disables(tmp_path, tiny_model_path, one_thread):
    scorer = Scorer(silent={1, 2, 4, 5})  # never three in a row
    trainer = _ppo(tmp_path / "a", tiny_model_path, steps=6, rewards=[scorer])
    trainer.train()
    assert scorer.batches == 6 and trainer.state.global_step == 6
    unscored = [row["rollouts/unscored_total"] for row in trainer.state.log_history if "rollouts/unscored_total" in row]
    assert unscored[-1] == 4 * 8  # four silent batches of 8 completions (4 prompts x 2), counted

    off = Scorer(silent=True)
    trainer = _ppo(tmp_path / "b", tiny_model_path, steps=4, rewards=[off], max_unscored_batches=0)
    trainer.train()
    assert off.batches == 4


def test_max_unscored_batches_is_checked():
    import trl_plus

    with pytest.raises(ValueError, match="max_unscored_batches must be an integer >= 0"):
        trl_plus.PPOConfig(output_dir="/tmp/x", max_unscored_batches=-1)


def test_cli_run_that_scores_nothing_exits_1(tmp_path, capsys, one_thread):
    reward = tmp_path / "silent_reward.py"
    reward.write_text("def score(prompts, completions, **kw):\n    return [None] * len(completions)\n")
    out = tmp_path / "out"
    code = main([
        "train", "tiny-ppo", "--output-dir", str(out), "--set", "ppo.max_steps=6", "--set", "ppo.num_mini_batches=1",
        "--set", "ppo.num_ppo_epochs=1", "--set", "ppo.per_device_train_batch_size=8",
        "--set", f"rewards.0.function={reward}:score", "--set", "rewards.0.kwargs={}",
    ])
    err = capsys.readouterr().err
    assert code == 1
    assert "no completion was scored in 3 consecutive rollout batches" in err and "Traceback" not in err
    assert f"python: {reward}:score" in err
    assert not (out / "model.safetensors").exists()


def test_gold_and_judge_sources_are_checked_the_same_way(plugin_manager):
    from trl_plus.eval.harness import _gold_scores

    with pytest.raises(RewardSourceError, match=r"reward source eval\.gold returned a dict with 2 keys instead"):
        _gold_scores(returns_dict, ["p"] * 3, ["a", "b", "c"])
    assert _gold_scores(lambda p, c: [1, None, float("nan")], ["p"] * 3, ["a", "b", "c"]) == [1.0, None, None]
    judge = plugin_manager.components().judge(
        {"name": "reward_source", "source": {"name": "python", "function": f"{__name__}:returns_scalar"}}
    )
    with pytest.raises(RewardSourceError, match=rf"eval\.judges\.source \(python: {__name__}:returns_scalar\) returned a float"):
        judge(["p"], ["a"], ["b"])
