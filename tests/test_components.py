"""Reward mixing and the errors a misbehaving reward source or schedule gets."""

import math

import pytest

from trl_plus.errors import ComponentError, RecipeError, RewardSourceError


def length_reward(prompts, completions, **columns):
    return [float(len(c)) for c in completions]


def count_a(prompts, completions, scale=1.0, **columns):
    return [scale * c.count("a") for c in completions]


def test_weighted_sum_and_per_source_scores(plugin_manager):
    mix = plugin_manager.components().reward_mix(
        [
            {"name": "python", "function": f"{__name__}:length_reward", "weight": 0.5},
            {"name": "python", "function": f"{__name__}:count_a", "kwargs": {"scale": 2.0}, "alias": "a"},
        ]
    )
    scores = mix.score(["p", "p"], ["aa", "bbbb"])
    assert scores.per_source == {"python": [2.0, 4.0], "a": [4.0, 0.0]}
    assert scores.total == [0.5 * 2 + 4.0, 0.5 * 4 + 0.0]


def test_none_means_no_opinion(plugin_manager):
    def half(prompts, completions):
        return [None if c == "skip" else 1.0 for c in completions]

    def always_none(prompts, completions):
        return [None] * len(completions)

    mix = plugin_manager.components().reward_mix([half, length_reward])
    assert mix(["p", "p"], ["skip", "ab"]) == [4.0, 3.0]
    assert plugin_manager.components().reward_mix([always_none])(["p"], ["x"]) == [None]


def test_same_log_name_twice_needs_alias(plugin_manager):
    spec = {"name": "python", "function": f"{__name__}:length_reward"}
    with pytest.raises(RecipeError, match="alias"):
        plugin_manager.components().reward_mix([spec, spec])


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda p, c: [1.0], "returned 1 scores for 2 completions"),
        (lambda p, c: [1.0, float("nan")], "returned nan for completion 1"),
        (lambda p, c: [1.0, "high"], "returned 'high' for completion 1"),
        (lambda p, c: 1 / 0, "raised: ZeroDivisionError"),
    ],
)
def test_misbehaving_source_is_named(plugin_manager, bad, message):
    bad.__name__ = "flaky_source"
    mix = plugin_manager.components().reward_mix([bad])
    with pytest.raises(RewardSourceError) as exc:
        mix(["p", "q"], ["x", "y"])
    assert "'flaky_source'" in str(exc.value) and message in str(exc.value)


def test_normalisation_is_running_zscore(plugin_manager):
    mix = plugin_manager.components().reward_mix(
        [{"name": "python", "function": f"{__name__}:length_reward", "normalize": True}]
    )
    out = mix(["p"] * 4, ["a", "aa", "aaa", "aaaa"])
    assert sum(out) == pytest.approx(0.0, abs=1e-9)
    assert (sum(v * v for v in out) / 3) == pytest.approx(1.0)


def test_python_source_from_file(plugin_manager, tmp_path):
    module = tmp_path / "my_reward.py"
    module.write_text("def score(prompts, completions, bonus=0.0):\n    return [len(c) + bonus for c in completions]\n")
    source = plugin_manager.components().reward_source(
        {"name": "python", "function": f"{module}:score", "kwargs": {"bonus": 1.0}}
    )
    assert source(["p"], ["abc"]) == [4.0]
    with pytest.raises(RecipeError, match="has no attribute 'nope'"):
        plugin_manager.components().reward_source({"name": "python", "function": f"{module}:nope"})


def test_reward_model_source_scores_at_last_token(plugin_manager, tiny_reward_model_path, tiny_reward_model):
    import torch

    source = plugin_manager.components().reward_source(
        {"name": "reward_model", "model": str(tiny_reward_model_path), "batch_size": 2}
    )
    prompts, completions = ["the movie was", "a", "the story is"], [" great .", " b", " good , the music is nice"]
    batched = source(prompts, completions)
    tok = source.tokenizer
    for p, c, got in zip(prompts, completions, batched):
        ids = tok(p + c, return_tensors="pt")
        with torch.no_grad():
            alone = tiny_reward_model(**ids).logits[0, 0].item()  # no padding: nothing to get wrong
        assert got == pytest.approx(alone, abs=1e-4)


def test_schedule_values_are_checked(plugin_manager):
    schedule = plugin_manager.components().kl_schedule(lambda step, stats: -1.0)
    with pytest.raises(ComponentError, match="returned -1.0 at step 3"):
        schedule(3, {})
    nan = plugin_manager.components().kl_schedule(lambda step, stats: math.nan)
    with pytest.raises(ComponentError, match="finite"):
        nan(0, {})
