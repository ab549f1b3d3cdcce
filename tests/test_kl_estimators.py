"""The two KL estimators: the token estimator (exact per-position KL of the next-token
distributions, summed along each sample) against the sampled log-ratio, on the same samples."""

import json

import numpy as np
import pytest

from trl_plus.errors import DataError, RecipeError
from trl_plus.eval import estimate_kl, evaluate_checkpoint
from trl_plus.eval.config import validate_eval_section
from trl_plus.eval.generation import GenerationSettings, encode_prompts, load_policy, sample_token_ids
from trl_plus.eval.kl import sequence_logprobs, token_kl
from trl_plus.testing import preference_rows


def unique_prompts(n):
    return list(dict.fromkeys(r["prompt"] for r in preference_rows()))[:n]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from trl_plus.tiny import save_tiny

    root = tmp_path_factory.mktemp("kl-estimators")
    a = save_tiny(root / "policy", "causal-lm", seed=0)
    b = save_tiny(root / "reference", "causal-lm", seed=5)
    return load_policy(str(a), model_id="est-policy"), load_policy(str(b), model_id="est-reference")


def count_forwards(monkeypatch):
    """Which models run a forward pass inside the KL module (the list fills as they do)."""
    import trl_plus.eval.kl as kl_module

    seen = []
    real = kl_module._completion_logprobs
    monkeypatch.setattr(kl_module, "_completion_logprobs", lambda model, *a: seen.append(model) or real(model, *a))
    return seen


def test_token_kl_is_the_per_position_kl_and_its_log_probs_are_the_sequences(pair):
    policy, reference = pair
    prompts = unique_prompts(6)
    prompt_ids = encode_prompts(policy.tokenizer, prompts)
    samples = sample_token_ids(policy, prompt_ids, GenerationSettings(max_new_tokens=5, batch_size=4), progress=False)
    pad = policy.tokenizer.pad_token_id
    kl, lp, lq = token_kl(policy.model, reference.model, prompt_ids, samples, pad_id=pad, batch_size=4)
    assert np.allclose(lp, sequence_logprobs(policy.model, prompt_ids, samples, pad_id=pad), atol=1e-5)
    assert np.allclose(lq, sequence_logprobs(reference.model, prompt_ids, samples, pad_id=pad), atol=1e-5)
    # by hand for one completion: sum over its positions of sum_v p(v) (log p(v) - log q(v))
    import torch

    row = prompt_ids[2] + samples[2]
    with torch.no_grad():
        p = torch.log_softmax(policy.model(torch.tensor([row])).logits[0].float(), -1)
        q = torch.log_softmax(reference.model(torch.tensor([row])).logits[0].float(), -1)
    positions = range(len(prompt_ids[2]) - 1, len(row) - 1)
    by_hand = sum(float((p[t].exp() * (p[t] - q[t])).sum()) for t in positions)
    assert kl[2] == pytest.approx(by_hand, rel=1e-4)
    assert np.all(kl > 0)
    same, _, _ = token_kl(policy.model, policy.model, prompt_ids, samples, pad_id=pad)
    assert np.abs(same).max() < 1e-6


def test_both_estimators_are_unbiased_and_the_token_one_spreads_less(pair):
    """Many samples on the same prompts: the two estimates agree within their errors, and
    the token estimator's spread within a prompt is the smaller one."""
    policy, reference = pair
    prompts = unique_prompts(8)
    common = dict(num_samples=60, max_new_tokens=6, batch_size=64, seed=3, progress=False)
    token = estimate_kl(policy, reference, prompts, estimator="token", **common)
    sample = estimate_kl(policy, reference, prompts, estimator="sample", **common)
    assert (token["estimator"], sample["estimator"]) == ("token", "sample")
    # same samples (same seed): each reports the other's estimate as sampled_log_ratio
    assert token["sampled_log_ratio"] == pytest.approx(sample["kl"], abs=1e-5)
    both = np.hypot(token["stderr"], sample["stderr"])
    assert abs(token["kl"] - sample["kl"]) < 4 * both
    assert token["kl"] > 10 * token["stderr"]
    assert token["stderr"] < 0.7 * sample["stderr"]


def test_the_harness_reuses_the_sampled_distributions_and_needs_no_policy_forward(pair, monkeypatch):
    policy, reference = pair
    prompts = unique_prompts(10)
    config = {"generation": {"max_new_tokens": 6, "batch_size": 4}, "kl": {"num_samples": 1}}
    seen = count_forwards(monkeypatch)
    out = evaluate_checkpoint(policy, prompts, reference=reference, config=config, progress=False)
    kl = out["kl"]
    assert kl["estimator"] == "token" and kl["reused_samples"] == 1
    assert kl["policy_logprobs_from_sampling"]
    assert seen and all(m is reference.model for m in seen)
    # the same numbers from a forward pass of the policy over the same samples
    monkeypatch.setattr("trl_plus.eval.kl.DISTRIBUTIONS_BUDGET_BYTES", 0)
    seen.clear()
    forward = evaluate_checkpoint(policy, prompts, reference=reference, config=config, progress=False)
    assert not forward["kl"]["policy_logprobs_from_sampling"]
    assert policy.model in seen
    assert forward["kl"]["kl"] == pytest.approx(kl["kl"], abs=1e-5)
    assert forward["kl"]["mean_policy_logprob"] == pytest.approx(kl["mean_policy_logprob"], abs=1e-4)


def test_a_top_up_keeps_its_distributions_too(pair, monkeypatch):
    policy, reference = pair
    prompts = unique_prompts(8)
    seen = count_forwards(monkeypatch)
    out = evaluate_checkpoint(policy, prompts, reference=reference, progress=False,
                              config={"generation": {"max_new_tokens": 5}, "kl": {"num_samples": 3}})
    assert (out["kl"]["reused_samples"], out["kl"]["samples"]) == (1, 24)
    assert out["kl"]["policy_logprobs_from_sampling"]
    assert all(m is reference.model for m in seen)


def test_a_rerun_reads_the_scores_from_the_cache_and_a_new_reference_misses_it(pair, tmp_path, monkeypatch):
    from trl_plus.tiny import save_tiny

    policy, reference = pair
    prompts = unique_prompts(8)
    config = {"generation": {"max_new_tokens": 5}, "kl": {"num_samples": 2}}
    first = evaluate_checkpoint(policy, prompts, reference=reference, config=config, out_dir=tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert [r["estimator"] for r in rows if r["kind"] == "kl_scores"] == ["token"]
    seen = count_forwards(monkeypatch)
    again = evaluate_checkpoint(policy, prompts, reference=reference, config=config, out_dir=tmp_path, progress=False)
    assert seen == []  # no forward pass at all: the samples and their scores were cached
    for key in ("kl", "stderr", "sampled_log_ratio", "mean_policy_logprob", "mean_reference_logprob"):
        assert again["kl"][key] == first["kl"][key], key
    other = load_policy(str(save_tiny(tmp_path / "other-reference", "causal-lm", seed=9)), model_id="other-ref")
    moved = evaluate_checkpoint(policy, prompts, reference=other, config=config, out_dir=tmp_path, progress=False)
    assert seen and moved["kl"]["kl"] != first["kl"]["kl"]
    sample = evaluate_checkpoint(policy, prompts, reference=reference, out_dir=tmp_path, progress=False,
                                 config={**config, "kl": {**config["kl"], "estimator": "sample"}})
    assert sample["kl"]["estimator"] == "sample"
    assert sample["kl"]["kl"] == pytest.approx(first["kl"]["sampled_log_ratio"], abs=1e-5)


def test_an_unknown_estimator_is_named(pair):
    with pytest.raises(RecipeError, match=r"eval\.kl\.estimator"):
        validate_eval_section({"kl": {"estimator": "exact"}})
    policy, reference = pair
    with pytest.raises(DataError, match="unknown KL estimator 'exact'.*token, sample"):
        estimate_kl(policy, reference, unique_prompts(2), estimator="exact", progress=False)


def test_distributions_of_different_sizes_are_a_clear_error(pair, tmp_path):
    import torch

    policy, reference = pair
    prompt_ids = encode_prompts(policy.tokenizer, unique_prompts(2))
    samples = sample_token_ids(policy, prompt_ids, GenerationSettings(max_new_tokens=4), progress=False)
    wide = [torch.zeros(len(s), policy.model.config.vocab_size + 8) for s in samples]
    with pytest.raises(DataError, match="token KL estimator.*estimator: sample"):
        token_kl(policy.model, reference.model, prompt_ids, samples, policy_distributions=wide)


def test_cli_chooses_the_estimator(tmp_path, capsys):
    from trl_plus.cli import main
    from trl_plus.tiny import save_tiny

    a = save_tiny(tmp_path / "a", "causal-lm", seed=0)
    b = save_tiny(tmp_path / "b", "causal-lm", seed=5)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in unique_prompts(6)))
    for estimator in ("sample", "token"):
        out = tmp_path / estimator
        assert main(["eval", str(a), "--reference", str(b), "--prompts", str(prompts), "--out", str(out),
                     "--max-new-tokens", "4", "--kl-samples", "2", "--kl-estimator", estimator]) == 0
        kl = json.loads((out / "eval.json").read_text())["kl"]
        assert kl["estimator"] == estimator and kl["num_samples"] == 2
        assert f"{estimator} estimator, 2 sample(s) per prompt" in capsys.readouterr().out
