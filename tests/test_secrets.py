"""Security: YAML cannot run code, remote code stays off unless asked for, tokens come only
from the environment variables a recipe names and appear in no file, log or message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trl_plus.cli import main
from trl_plus.errors import RecipeError, TrlPlusError

TOKEN = "tok-SECRET-4f1c9e"  # what the run must never write or print
TOKEN_ENV = "TRL_PLUS_TEST_SCORER_TOKEN"
FAST_PPO = ["--set", "ppo.max_steps=2", "--set", "ppo.num_mini_batches=1", "--set", "ppo.num_ppo_epochs=1",
            "--set", "ppo.per_device_train_batch_size=8", "--set", "ppo.logging_steps=1"]


# ---------------------------------------------------------------------------------------
# YAML: safe_load only
# ---------------------------------------------------------------------------------------


def test_python_tags_in_a_recipe_are_refused_and_nothing_runs(tmp_path, capsys):
    from trl_plus.recipe import load_recipe

    marker = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"trainer: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(recipe)
    assert main(["validate", str(recipe)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    # through --set, the tag stays text and is rejected as a value
    assert main(["validate", "tiny-ppo", "--set", f"ppo.seed=!!python/object/apply:os.system ['touch {marker}']"]) == 2
    assert "ppo.seed" in capsys.readouterr().err
    assert not marker.exists()


# ---------------------------------------------------------------------------------------
# trust_remote_code: off unless the recipe sets it
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting, expected", [(None, False), (True, True)])
def test_trust_remote_code_only_when_the_recipe_sets_it(monkeypatch, plugin_manager, setting, expected):
    import transformers

    from trl_plus.loading import load_model, load_tokenizer
    from trl_plus.recipe import load_recipe

    calls = []

    def fake(kind):
        def from_pretrained(name, *args, **kwargs):
            calls.append((kind, kwargs))
            raise OSError("stop here")
        return from_pretrained

    for cls in ("AutoTokenizer", "AutoModelForCausalLM", "AutoModelForSequenceClassification"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", fake(cls))
    overrides = [] if setting is None else [f"model.trust_remote_code={str(setting).lower()}"]
    recipe = load_recipe("tiny-ppo", overrides, hooks=plugin_manager)
    with pytest.raises(TrlPlusError):
        load_tokenizer(recipe.model)
    with pytest.raises(TrlPlusError):
        load_model(recipe.model, plugin_manager, "policy")
    with pytest.raises(OSError):
        plugin_manager.components().reward_source({"name": "reward_model", "model": "/no/such/model"})
    assert [k for k, _ in calls] == ["AutoTokenizer", "AutoModelForCausalLM", "AutoTokenizer"]
    assert [kw["trust_remote_code"] for _, kw in calls[:2]] == [expected, expected]
    assert calls[2][1]["trust_remote_code"] is False  # a reward model's own default


# ---------------------------------------------------------------------------------------
# tokens: from the environment only, never written or printed
# ---------------------------------------------------------------------------------------


def _files_holding(folder: Path, secret: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture
def scorer(json_endpoint, monkeypatch):
    """A scoring and judging endpoint that insists on the bearer token from the environment."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    def respond(body):
        if srv.requests[-1][0].get("Authorization") != f"Bearer {TOKEN}":
            return 401, b""
        if isinstance(body, dict) and "completions_a" in body:
            return 200, {"preferences": [float(len(a) >= len(b)) for a, b in zip(body["completions_a"], body["completions_b"])]}
        return 200, {"scores": [float(len(c)) for c in body["completions"]]}

    srv = json_endpoint(respond)
    return srv


def test_training_with_an_http_reward_never_writes_or_prints_the_token(tmp_path, scorer, capfd, one_thread):
    out = tmp_path / "run"
    url = scorer.url + "score?api_key=keyparam-SECRET-77&jwt=jwt-SECRET-1&code=code-SECRET-2&model=m1"
    reward = f"rewards.0={{name: http, url: '{url}', token_env: {TOKEN_ENV}, alias: remote, backoff: 0.01}}"
    assert main(["train", "tiny-ppo", "--output-dir", str(out), *FAST_PPO, "--set", reward]) == 0
    captured = capfd.readouterr()
    assert len(scorer.requests) == 2  # one rollout batch per step, each with the token
    assert (out / "model.safetensors").exists()
    for secret in (TOKEN, "keyparam-SECRET-77", "jwt-SECRET-1", "code-SECRET-2"):
        assert _files_holding(out, secret) == []
        assert secret not in captured.out and secret not in captured.err
    saved = (out / "recipe.yaml").read_text()
    assert TOKEN_ENV in saved  # the variable's name is kept, never its value
    assert "score?api_key=***&jwt=***&code=***&model=***" in saved  # in saved files, every query value goes


def test_failing_http_reward_error_holds_no_token(tmp_path, json_endpoint, monkeypatch, capfd, one_thread):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    # A server whose 401 page echoes the header it got.
    srv = json_endpoint(lambda body: (401, f"rejected: {srv.requests[-1][0]['Authorization']}".encode()))
    out = tmp_path / "run"
    url = srv.url.replace("http://", "http://user:pw-SECRET-9@")
    reward = f"rewards.0={{name: http, url: '{url}', token_env: {TOKEN_ENV}}}"
    assert main(["train", "tiny-ppo", "--output-dir", str(out), *FAST_PPO, "--set", reward]) == 1
    captured = capfd.readouterr()
    assert f"not retried: check the token in the environment variable '{TOKEN_ENV}'" in captured.err
    assert "http://***@127.0.0.1" in captured.err
    for secret in (TOKEN, "pw-SECRET-9"):
        assert secret not in captured.out and secret not in captured.err
        assert _files_holding(out, secret) == []


def test_eval_with_an_http_judge_and_gold_never_writes_or_prints_the_token(tmp_path, scorer, capfd, one_thread):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Review {i}:"}) + "\n" for i in range(3)))
    out = tmp_path / "eval"
    code = main([
        "eval", "tiny:causal-lm", "--reference", "tiny:causal-lm", "--prompts", str(prompts), "--no-kl",
        "--judge", f"http_pairwise:url={scorer.url}?access_token=qparam-SECRET-5&jwt=jwt-SECRET-6&bearer=br-SECRET-7"
                   f",token_env={TOKEN_ENV},backoff=0.01",
        "--gold", f"http:url={scorer.url}?pass=pass-SECRET-8&code=code-SECRET-9&model=m1,token_env={TOKEN_ENV}",
        "--out", str(out), "--max-new-tokens", "4", "--quiet",
    ])
    captured = capfd.readouterr()
    assert code == 0, captured.err[-2000:]
    results = json.loads((out / "eval.json").read_text())
    assert results["win_rates"]["http_pairwise"]["judge_failures"] == 0
    assert results["win_rates"]["http_pairwise"]["judged"] == 3
    assert results["gold_reward"]["failed"] == 0
    assert all(h["Authorization"] == f"Bearer {TOKEN}" for h, _ in scorer.requests)
    assert results["win_rates"]["http_pairwise"]["judge"]["url"].endswith("?access_token=***&jwt=***&bearer=***")
    assert results["manifest"]["gold"]["url"].endswith("?pass=***&code=***&model=***")
    for secret in (TOKEN, "qparam-SECRET-5", "jwt-SECRET-6", "br-SECRET-7", "pass-SECRET-8", "code-SECRET-9"):
        assert _files_holding(out, secret) == []
        assert secret not in captured.out and secret not in captured.err


def test_a_token_is_read_only_from_the_named_variable(plugin_manager, monkeypatch):
    monkeypatch.delenv("UNSET_TOKEN_VAR", raising=False)
    with pytest.raises(RecipeError, match="'UNSET_TOKEN_VAR' \\(token_env\\) is not set"):
        plugin_manager.components().reward_source({"name": "http", "url": "http://127.0.0.1:9/", "token_env": "UNSET_TOKEN_VAR"})
    with pytest.raises(RecipeError, match="no keyword 'token'"):
        plugin_manager.components().reward_source({"name": "http", "url": "http://127.0.0.1:9/", "token": TOKEN})


# ---------------------------------------------------------------------------------------
# addresses in messages, and values that look like credentials anywhere in a message
# ---------------------------------------------------------------------------------------

LIVE_KEY = "sk-live-4f9a8B7c6D5e4F3a2B1c0D9e8F7a6B5c4D3e"  # 44 characters, a key's shape


def test_credential_query_values_are_hidden_in_messages(plugin_manager):
    from trl_plus.redact import redact_url

    url = ("http://127.0.0.1:9/score?jwt=j-111&bearer=b-222&pass=p-333&code=c-444&X-Amz-Signature=s-555"
           "&session_id=s-666&q=" + LIVE_KEY + "&model=m1#access_token=f-777")
    shown = redact_url(url)
    assert shown == ("http://127.0.0.1:9/score?jwt=***&bearer=***&pass=***&code=***&X-Amz-Signature=***"
                     "&session_id=***&q=***&model=m1")
    with pytest.raises(TrlPlusError) as info:  # the endpoint is down: the message names it, redacted
        plugin_manager.components().reward_source({"name": "http", "url": url, "retries": 0, "timeout": 1})(["p"], ["x"])
    for secret in ("j-111", "b-222", "p-333", "c-444", "s-555", "s-666", "f-777", LIVE_KEY):
        assert secret not in str(info.value)
    # a webhook-style token in the path is hidden too
    assert redact_url("https://hooks.example.com/services/T0/B0/" + LIVE_KEY) == "https://hooks.example.com/services/T0/B0/***"


@pytest.mark.parametrize("setting", [
    "rewards.0={name: http, url: 'http://127.0.0.1:9/', token_env: %s}",
    "rewards.0={name: http, url: %s}",
    "ppo.learning_rate=%s",
    "ppo.seed=%s",
    "rewards.0.name=%s",
    "rewards.0.function=%s",
])
def test_a_token_where_a_name_or_number_goes_is_shown_by_its_shape(capsys, setting):
    assert main(["validate", "tiny-ppo", "--set", setting % LIVE_KEY]) == 2
    err = capsys.readouterr().err
    assert LIVE_KEY not in err and LIVE_KEY[8:20] not in err
    assert "'sk-l…(44 chars)'" in err or "<a 44-character string that looks like a credential>" in err, err


def test_token_env_holding_a_token_says_to_name_a_variable(plugin_manager):
    with pytest.raises(RecipeError, match=r"token_env: must be the NAME of the environment variable .* not the token"):
        plugin_manager.components().reward_source({"name": "http", "url": "http://127.0.0.1:9/", "token_env": LIVE_KEY})


def test_what_is_not_a_credential_is_still_shown():
    from trl_plus.redact import hide_secrets, looks_like_secret

    for word in ("Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "DeepSeek-R1-Distill-Qwen-1.5B", "BertForSequenceClassification",
                 "3f2a9c1b4d5e6f708192a3b4c5d6e7f8091a2b3c", "550e8400-e29b-41d4-a716-446655440000",
                 "per_device_train_batch_size", "trl-lib/ultrafeedback_binarized", "checkpoint-500"):
        assert not looks_like_secret(word), word
        assert hide_secrets(f"no model {word!r} at /runs/{word}/x") == f"no model {word!r} at /runs/{word}/x"
    for word in (LIVE_KEY, "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "AKIAIOSFODNN7EXAMPLE",
                 "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz", "xoxb-123456789012-AbCdEf12GhIj34KlMn"):
        assert looks_like_secret(word), word


def test_inline_secrets_in_a_recipe_are_not_saved(plugin_manager):
    from trl_plus.recipe import load_recipe

    sets = ["rewards.0.kwargs.api_key=hunter2-pw", f"rewards.0.kwargs.note={LIVE_KEY}"]
    saved = load_recipe("tiny-ppo", sets, hooks=plugin_manager).to_yaml()
    assert "hunter2-pw" not in saved and LIVE_KEY not in saved
    assert "api_key: '...(10 chars)'" in saved and "note: sk-l...(44 chars)" in saved
    assert "chars: e" in saved and "toy_rewards.py:char_share" in saved  # the rest as written
