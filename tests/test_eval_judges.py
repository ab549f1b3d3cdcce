"""Judges: position-swap ties, HTTP retries and failed pairs, judge names, eval section."""

import time

import pytest

import trl_plus
from trl_plus.errors import RecipeError, UnknownComponentError
from trl_plus.eval.config import validate_eval_section
from trl_plus.eval.judging import normalise_judge_spec, run_judge


def http_judge(plugin_manager, url, **kw):
    return plugin_manager.components().judge({"name": "http_pairwise", "url": url, "backoff": 0.0, **kw})


def test_first_position_bias_becomes_ties(plugin_manager, json_endpoint):
    srv = json_endpoint(lambda body: (200, {"preferences": ["A"] * len(body["prompts"])}))
    judge = http_judge(plugin_manager, srv.url)
    out = judge(["p1", "p2"], ["good", "bad"], ["bad", "good"])
    assert out == [0.5, 0.5]
    assert len(srv.requests) == 2  # asked once in each order


def test_consistent_judge_keeps_its_verdict(plugin_manager, json_endpoint):
    # prefers the longer completion, whichever position it is in
    def longer(body):
        return 200, {"preferences": [float(len(a) > len(b)) for a, b in zip(body["completions_a"], body["completions_b"])]}

    judge = http_judge(plugin_manager, json_endpoint(longer).url)
    assert judge(["p", "p"], ["long answer", "x"], ["x", "long answer"]) == [1.0, 0.0]


@pytest.mark.parametrize("mode", ["garbage", "timeout", "status"])
def test_failing_judge_is_retried_then_pairs_fail(plugin_manager, json_endpoint, mode, monkeypatch):
    monkeypatch.setenv("JUDGE_TOKEN", "s3cr3t-value")
    behaviours = {
        "garbage": lambda body: (200, b"<html>not json"),
        "timeout": lambda body: (time.sleep(1.0), (200, {"preferences": [1.0] * len(body["prompts"])}))[1],
        "status": lambda body: (503, {"error": "busy"}),
    }
    srv = json_endpoint(behaviours[mode])
    judge = http_judge(plugin_manager, srv.url, retries=2, timeout=0.3, token_env="JUDGE_TOKEN")
    out = run_judge(judge, "http_pairwise", ["p1", "p2"], ["a", "b"], ["c", "d"], progress=False)
    assert out == [None, None]
    assert len(srv.requests) == 2 * 3  # two orders x (1 try + 2 retries)
    assert srv.requests[0][0]["Authorization"] == "Bearer s3cr3t-value"
    assert "s3cr3t-value" not in repr(judge) and all("s3cr3t" not in f for f in judge.failures)


def test_partly_garbage_answers_fail_only_those_pairs(plugin_manager, json_endpoint):
    srv = json_endpoint(lambda body: (200, {"preferences": ["A", "maybe"][: len(body["prompts"])]}))
    judge = http_judge(plugin_manager, srv.url, swap=False)
    assert judge(["p1", "p2"], ["a", "b"], ["c", "d"]) == [1.0, None]


def test_judge_names_and_reward_sources(plugin_manager, register_plugin):
    class Plugin:
        @staticmethod
        @trl_plus.hookimpl
        def trl_plus_register_reward_sources(register):
            register.add("shouting", lambda bonus=1.0: (lambda p, c, **k: [bonus * sum(x.isupper() for x in t) for t in c]))

    register_plugin(Plugin(), "shouting-plugin")
    spec = normalise_judge_spec("shouting", plugin_manager)
    assert spec == {"name": "reward_source", "source": {"name": "shouting"}}
    judge = plugin_manager.components().judge(spec)
    assert judge(["p", "p"], ["AB", "a"], ["a", "AB"]) == [pytest.approx(1 / (1 + 2.718281828 ** -2)), pytest.approx(1 / (1 + 2.718281828 ** 2))]
    with pytest.raises(UnknownComponentError, match="Did you mean: reward_model"):
        normalise_judge_spec("reward_modle", plugin_manager)


def test_eval_section_errors_name_the_key(plugin_manager):
    with pytest.raises(RecipeError, match=r"eval\.judgs.*Did you mean: judges"):
        validate_eval_section({"judgs": []}, plugin_manager)
    with pytest.raises(RecipeError, match=r"eval\.generation\.max_new_tokens"):
        validate_eval_section({"generation": {"max_new_tokens": 0}}, plugin_manager)
    with pytest.raises(RecipeError, match=r"eval\.judges\[0\].*no keyword 'modle'"):
        validate_eval_section({"judges": [{"name": "reward_model", "modle": "x"}]}, plugin_manager)
    with pytest.raises(RecipeError, match=r"eval\.gold"):
        validate_eval_section({"gold": {"name": "nope"}}, plugin_manager)
    ok = validate_eval_section({"judges": [{"name": "python", "function": "m:f"}], "tasks": ["trl_plus_offline"]}, plugin_manager)
    assert ok.tasks == ["trl_plus_offline"]
