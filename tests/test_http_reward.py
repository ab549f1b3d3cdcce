"""The built-in HTTP reward source against an endpoint on 127.0.0.1: batching, auth, retries."""

import pytest

from trl_plus.errors import RecipeError, RewardSourceError

TOKEN = "s3cret-token-value"


def length_scores(failures: int = 0, status: int = 503):
    """Scores completions by length after failing the first ``failures`` requests."""
    calls = []

    def respond(body):
        calls.append(body)
        if len(calls) <= failures:
            return status, b""
        return 200, {"scores": [float(len(c)) for c in body["completions"]]}

    return respond


def build(plugin_manager, **kw):
    return plugin_manager.components().reward_source({"name": "http", **kw})


def test_batches_and_sends_the_bearer_token(plugin_manager, json_endpoint, monkeypatch):
    monkeypatch.setenv("MY_RM_TOKEN", TOKEN)
    s = json_endpoint(length_scores())
    source = build(plugin_manager, url=s.url, token_env="MY_RM_TOKEN", batch_size=2)
    assert source(["p"] * 3, ["a", "bbb", "cc"]) == [1.0, 3.0, 2.0]
    assert [len(body["completions"]) for _, body in s.requests] == [2, 1]
    assert all(headers["Authorization"] == f"Bearer {TOKEN}" for headers, _ in s.requests)
    assert TOKEN not in repr(source)


def test_retries_then_succeeds(plugin_manager, json_endpoint):
    s = json_endpoint(length_scores(failures=2))
    source = build(plugin_manager, url=s.url, retries=3, backoff=0.01)
    assert source(["p"], ["abcd"]) == [4.0]
    assert len(s.requests) == 3


def test_gives_up_with_an_error_naming_the_source_and_not_the_token(plugin_manager, json_endpoint, monkeypatch):
    monkeypatch.setenv("MY_RM_TOKEN", TOKEN)
    s = json_endpoint(length_scores(failures=100, status=500))
    mix = plugin_manager.components().reward_mix(
        [{"name": "http", "url": s.url, "retries": 2, "backoff": 0.01, "token_env": "MY_RM_TOKEN", "alias": "remote"}]
    )
    with pytest.raises(RewardSourceError) as exc:
        mix(["p"], ["x"])
    assert s.url in str(exc.value) and "500" in str(exc.value) and TOKEN not in str(exc.value)
    assert len(s.requests) == 3  # the first try and two retries


def test_missing_token_variable_fails_at_start_up(plugin_manager, monkeypatch):
    monkeypatch.delenv("NOT_SET_TOKEN", raising=False)
    with pytest.raises(RecipeError, match="'NOT_SET_TOKEN'"):
        build(plugin_manager, url="http://127.0.0.1:9/score", token_env="NOT_SET_TOKEN")
    with pytest.raises(RecipeError, match="http:// or https://"):
        build(plugin_manager, url="ftp://example/score")
