"""Sampling seeds of the harness (each model its own stream) and KL from the judged samples."""

import json

import numpy as np
import pytest

from trl_plus.eval import estimate_kl, evaluate_checkpoint, generate, GenerationSettings
from trl_plus.eval.generation import checkpoint_id, encode_prompts, load_policy, sample_seed, sample_token_ids
from trl_plus.eval.kl import sequence_logprobs
from trl_plus.testing import preference_rows


def unique_prompts(n=40):
    return list(dict.fromkeys(r["prompt"] for r in preference_rows()))[:n]


def no_sampling(*args, **kwargs):
    raise AssertionError("sampled again instead of reading the cache")


def test_sample_seed_is_stable_and_separates_models_and_streams():
    assert sample_seed("model-a", 0) == sample_seed("model-a", 0)
    seeds = {sample_seed(m, s, stream) for m in ("model-a", "model-b", None) for s in (0, 1)
             for stream in ("candidate", "reference", "kl")}
    assert len(seeds) == 18
    assert all(0 <= s < 2**48 for s in seeds)


def test_checkpoint_against_itself_samples_independently_and_hits_the_cache(tiny_model_path, tmp_path, monkeypatch):
    # one identity for both sides, so the outcome does not depend on the temporary path
    me = load_policy(str(tiny_model_path), model_id="tiny-self")
    prompts = unique_prompts()
    config = {"judges": [{"name": "reward_model", "model": "tiny:reward-model"}],
              "generation": {"max_new_tokens": 8, "temperature": 1.0}, "kl": {"num_samples": 2}}
    out = evaluate_checkpoint(me, prompts, reference=me, config=config, out_dir=tmp_path, progress=False)
    seeds = out["manifest"]["seeds"]
    assert seeds["generation"] == 0
    assert seeds["candidate"] == sample_seed("tiny-self", 0, "candidate")
    assert seeds["reference"] == sample_seed("tiny-self", 0, "reference")
    assert seeds["kl"] == sample_seed("tiny-self", 0, "kl")
    assert {"bootstrap", "lm_eval"} <= set(seeds)

    settings = GenerationSettings(max_new_tokens=8, temperature=1.0)
    cache = tmp_path / "generations.jsonl"
    monkeypatch.setattr("trl_plus.eval.generation.sample_token_ids", no_sampling)
    candidate = generate(me, prompts, settings, cache, progress=False)
    reference = generate(me, prompts, settings, cache, stream="reference", progress=False)
    assert candidate[:5] == [e["completion"] for e in out["examples"]]
    assert reference[:5] == [e["reference"] for e in out["examples"]]
    distinct = sum(c != r for c, r in zip(candidate, reference))
    assert distinct >= 0.8 * len(prompts)
    w = out["win_rates"]["reward_model"]
    assert w["ties"] <= len(prompts) - distinct + 2
    assert w["win_rate_ci"][0] <= 0.5 <= w["win_rate_ci"][1]
    assert abs(w["win_rate"] - 0.5) < 0.2
    # the same policy as its own reference: every log-ratio is exactly 0
    assert out["kl"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert out["kl"]["reused_samples"] == 1

    again = evaluate_checkpoint(me, prompts, reference=me, config=config, out_dir=tmp_path, progress=False)
    assert again["examples"] == out["examples"]
    assert again["win_rates"]["reward_model"]["probabilities"] == w["probabilities"]
    assert again["kl"]["kl"] == out["kl"]["kl"]


def test_generate_by_path_gets_the_candidates_completions(tiny_model_path, tmp_path, monkeypatch):
    """What the comparison pipeline does: evaluate, then ask ``generate`` for the same completions."""
    from trl_plus.tiny import save_tiny

    other = save_tiny(tmp_path / "other", "causal-lm", seed=5)
    prompts = unique_prompts(12)
    config = {"generation": {"max_new_tokens": 6}, "kl": {"num_samples": 1}}
    out = evaluate_checkpoint(str(tiny_model_path), prompts, reference=str(other), config=config,
                              out_dir=tmp_path / "eval", progress=False)
    assert out["manifest"]["seeds"]["candidate"] == sample_seed(checkpoint_id(tiny_model_path), 0)
    assert out["manifest"]["seeds"]["reference"] == sample_seed(checkpoint_id(other), 0, "reference")
    monkeypatch.setattr("trl_plus.eval.generation.sample_token_ids", no_sampling)
    completions = generate(str(tiny_model_path), prompts, GenerationSettings(max_new_tokens=6),
                           tmp_path / "eval" / "generations.jsonl", progress=False)
    assert completions[:5] == [e["completion"] for e in out["examples"]]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    assert all(len(r["token_ids"]) == len(r["completions"]) for r in rows if r["kind"] == "generations")


@pytest.fixture(scope="module")
def two_policies(tiny_model_path, tmp_path_factory):
    from trl_plus.tiny import save_tiny

    other = save_tiny(tmp_path_factory.mktemp("kl-ref"), "causal-lm", seed=5)
    return load_policy(str(tiny_model_path), model_id="kl-policy"), load_policy(str(other), model_id="kl-reference")


def test_kl_from_the_judged_samples_equals_estimate_kl_on_the_same_samples(two_policies, tmp_path):
    policy, reference = two_policies
    prompts = unique_prompts(16)
    gen = {"max_new_tokens": 6, "num_samples": 2, "batch_size": 8}
    out = evaluate_checkpoint(policy, prompts, reference=reference, progress=False,
                              config={"generation": gen, "kl": {"num_samples": 2}})
    assert out["kl"]["reused_samples"] == 2
    # estimate_kl sampling by itself, with the candidate's seed and layout, draws those very samples
    direct = estimate_kl(policy, reference, prompts, num_samples=2, max_new_tokens=6, batch_size=8,
                         seed=out["manifest"]["seeds"]["candidate"], progress=False)
    assert direct["reused_samples"] == 0
    for key in ("kl", "stderr", "mean_policy_logprob", "mean_reference_logprob", "mean_completion_tokens"):
        assert out["kl"][key] == pytest.approx(direct[key], rel=1e-9, abs=1e-9), key


def test_kl_tops_up_the_judged_samples_from_its_own_stream(two_policies, tmp_path):
    policy, reference = two_policies
    prompts = unique_prompts(10)
    settings = GenerationSettings(max_new_tokens=6, num_samples=2, batch_size=4)
    cache = tmp_path / "generations.jsonl"
    out = evaluate_checkpoint(policy, prompts, reference=reference, out_dir=tmp_path, progress=False,
                              config={"generation": settings.to_dict(), "kl": {"num_samples": 3, "estimator": "sample"}})
    kl = out["kl"]
    assert (kl["reused_samples"], kl["num_samples"], kl["samples"]) == (2, 3, 30)
    seeds = out["manifest"]["seeds"]
    assert seeds["kl"] not in (seeds["candidate"], seeds["reference"])

    # the same number by hand: cached candidate ids, plus one sample per prompt drawn with the KL seed
    row = next(json.loads(line) for line in cache.read_text().splitlines()
               if json.loads(line)["kind"] == "generations" and json.loads(line)["seed"] == seeds["candidate"])
    prompt_ids = encode_prompts(policy.tokenizer, prompts)
    extra = sample_token_ids(policy, prompt_ids, settings.replace(num_samples=1, seed=seeds["kl"]), progress=False)
    samples = [ids for i in range(len(prompts)) for ids in row["token_ids"][2 * i:2 * i + 2] + [extra[i]]]
    expanded = [prompt_ids[i // 3] for i in range(len(samples))]
    pad = policy.tokenizer.pad_token_id
    ratio = (sequence_logprobs(policy.model, expanded, samples, pad_id=pad, batch_size=4)
             - sequence_logprobs(reference.model, expanded, samples, pad_id=pad, batch_size=4))
    # the policy's log-probs were kept from sampling (float32 sums, hence the tolerance)
    assert kl["policy_logprobs_from_sampling"]
    assert kl["kl"] == pytest.approx(ratio.reshape(len(prompts), 3).mean(axis=1).mean(), abs=1e-5)
    assert kl["kl"] > 0


def test_sampling_keeps_each_completions_log_prob_so_the_kl_needs_no_policy_forward(two_policies, monkeypatch):
    import trl_plus.eval.kl as kl_module

    policy, reference = two_policies
    prompts = unique_prompts(12)
    prompt_ids = encode_prompts(policy.tokenizer, prompts)
    settings = GenerationSettings(max_new_tokens=6, num_samples=2, batch_size=5)
    kept: list[float] = []
    samples = sample_token_ids(policy, prompt_ids, settings, progress=False, logprobs_out=kept)
    expanded = [prompt_ids[i // 2] for i in range(len(samples))]
    forward = sequence_logprobs(policy.model, expanded, samples, pad_id=policy.tokenizer.pad_token_id)
    assert len(kept) == len(samples) and np.abs(np.array(kept) - forward).max() < 1e-4
    assert np.all(np.array(kept) < 0)
    # not the model's own distribution: nothing is kept (it would not be the KL's log-prob)
    other: list[float] = []
    sample_token_ids(policy, prompt_ids, settings.replace(temperature=0.7), progress=False, logprobs_out=other)
    assert other == []

    scored = []
    real = kl_module.sequence_logprobs
    monkeypatch.setattr(kl_module, "sequence_logprobs", lambda model, *a, **k: scored.append(model) or real(model, *a, **k))
    out = evaluate_checkpoint(policy, prompts, reference=reference, progress=False,
                              config={"generation": {"max_new_tokens": 6}, "kl": {"num_samples": 3, "estimator": "sample"}})
    assert out["kl"]["policy_logprobs_from_sampling"] and out["kl"]["reused_samples"] == 1
    assert scored == [reference.model]  # only the reference scores the samples


def test_kl_samples_its_own_when_generation_is_not_its_distribution(two_policies):
    policy, reference = two_policies
    prompts = unique_prompts(6)
    for gen in ({"temperature": 0.7}, {"top_p": 0.9}, {"temperature": 0.0}):
        out = evaluate_checkpoint(policy, prompts, reference=reference, progress=False,
                                  config={"generation": {"max_new_tokens": 5, **gen}, "kl": {"num_samples": 2}})
        assert out["kl"]["reused_samples"] == 0, gen
    out = evaluate_checkpoint(policy, prompts, reference=reference, progress=False,
                              config={"generation": {"max_new_tokens": 5}, "kl": {"num_samples": 2, "max_new_tokens": 7}})
    assert out["kl"]["reused_samples"] == 0


def test_estimate_kl_rejects_samples_cut_differently(two_policies):
    from trl_plus.errors import DataError

    policy, reference = two_policies
    prompts = unique_prompts(2)
    word = policy.tokenizer(" great")["input_ids"][0]
    eos = policy.tokenizer.eos_token_id
    capped = [word] * 8  # ran to an 8-token cap without an EOS
    for max_new_tokens, rows in ((4, [[capped], [capped]]),  # longer than this cap
                                 (10, [[capped], [capped]]),  # stopped short of this cap, with no EOS
                                 (8, [[[word, eos, word]], [capped]])):  # went on after an EOS
        with pytest.raises(DataError, match="max_new_tokens"):
            estimate_kl(policy, reference, prompts, num_samples=1, max_new_tokens=max_new_tokens,
                        policy_samples=rows, progress=False)
    with pytest.raises(DataError, match="same number"):
        estimate_kl(policy, reference, prompts, num_samples=2, max_new_tokens=8,
                    policy_samples=[[capped, [word, eos]], [capped]], progress=False)
    ok = estimate_kl(policy, reference, prompts, num_samples=1, max_new_tokens=8,
                     policy_samples=[[capped], [[word, word, eos]]], progress=False)
    assert ok["reused_samples"] == 1 and ok["samples"] == 2 and np.isfinite(ok["kl"])
