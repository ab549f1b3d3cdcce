"""Evaluation samples from the model's own distribution, whatever the checkpoint's
``generation_config.json`` says (issue 17, item 8).

The checkpoint here ships ``repetition_penalty: 3``, ``no_repeat_ngram_size: 2`` and
``min_p: 0.2``. Merged into sampling, they made a checkpoint evaluated against itself come
out at a token KL of None (NaN from -inf log-probs) beside a sampled log-ratio of about
0.02, and ``trl-plus eval`` end in a TypeError in its summary.
"""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trl_plus.errors import RecipeError  # noqa: E402
from trl_plus.eval import estimate_kl, evaluate_checkpoint  # noqa: E402
from trl_plus.eval.generation import (  # noqa: E402
    GenerationSettings,
    encode_prompts,
    load_policy,
    sample_token_ids,
)
from trl_plus.testing import preference_rows  # noqa: E402

SHIPPED = {"repetition_penalty": 3.0, "no_repeat_ngram_size": 2, "min_p": 0.2}


def unique_prompts(n):
    return list(dict.fromkeys(r["prompt"] for r in preference_rows()))[:n]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny causal LM whose generation_config.json sets the three options. Its output
    layer is scaled up so its next-token distributions are peaked like a trained model's
    (freshly initialised, they are near uniform, and min_p 0.2 would cut nothing)."""
    import torch
    from transformers import AutoModelForCausalLM

    from trl_plus.tiny import save_tiny

    path = save_tiny(tmp_path_factory.mktemp("penalised") / "ckpt", "causal-lm", seed=0)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    model.save_pretrained(path)
    config_file = path / "generation_config.json"
    config = json.loads(config_file.read_text())
    config.update(SHIPPED)
    config_file.write_text(json.dumps(config))
    return path


def test_the_checkpoint_really_ships_the_options(checkpoint):
    """Guard for the other tests: the loaded model carries the options, so generate() would
    apply them unless evaluation sampling neutralises them."""
    policy = load_policy(str(checkpoint))
    for key, value in SHIPPED.items():
        assert getattr(policy.model.generation_config, key) == value


def test_recorded_log_probs_are_a_fresh_forwards_log_softmax(checkpoint):
    """What sampling records (each step's log-softmax and each completion's summed log-prob)
    is what one forward pass of the model over prompt + completion gives, token by token."""
    import torch

    policy = load_policy(str(checkpoint))
    prompts = unique_prompts(4)
    prompt_ids = encode_prompts(policy.tokenizer, prompts)
    logprobs, dists = [], []
    settings = GenerationSettings(max_new_tokens=10, num_samples=2, batch_size=8, seed=1)
    samples = sample_token_ids(policy, prompt_ids, settings, progress=False, logprobs_out=logprobs,
                               distributions_out=dists)
    assert len(samples) == len(logprobs) == len(dists) == 8
    checked = 0
    for i, (tokens, summed, dist) in enumerate(zip(samples, logprobs, dists)):
        prompt = prompt_ids[i // 2]
        row = torch.tensor([prompt + tokens])
        with torch.no_grad():
            fresh = torch.log_softmax(policy.model(row).logits[0].float(), dim=-1)
        fresh = fresh[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]  # next-token distributions
        assert torch.isfinite(dist).all(), "a token was blocked: not the model's own distribution"
        assert torch.allclose(dist, fresh, atol=1e-5), float((dist - fresh).abs().max())
        at_tokens = fresh.gather(1, torch.tensor(tokens)[:, None])[:, 0]
        recorded = dist.gather(1, torch.tensor(tokens)[:, None])[:, 0]
        assert torch.allclose(recorded, at_tokens, atol=1e-5)
        assert summed == pytest.approx(float(at_tokens.sum()), abs=1e-5)
        checked += len(tokens)
    assert checked >= 40
    # the model's own generation config is left as it was
    for key, value in SHIPPED.items():
        assert getattr(policy.model.generation_config, key) == value


def test_samples_are_drawn_from_the_whole_distribution(checkpoint):
    """min_p 0.2 never lets a token below a fifth of the most likely one's probability be
    drawn; the model's own distribution draws them in proportion to their mass. (A
    truncation applied after the recorder would leave the recorded log-probs right and
    the samples wrong, which the log-prob test cannot see.)"""
    import torch

    policy = load_policy(str(checkpoint))
    prompt_ids = encode_prompts(policy.tokenizer, unique_prompts(8))
    dists = []
    samples = sample_token_ids(policy, prompt_ids, GenerationSettings(max_new_tokens=10, num_samples=4, seed=3),
                               progress=False, distributions_out=dists)
    below, expected = 0, 0.0
    for tokens, dist in zip(samples, dists):
        p = dist.exp()
        cut = p < 0.2 * p.max(dim=-1, keepdim=True).values  # what min_p 0.2 removes at each step
        below += int(cut.gather(1, torch.tensor(tokens)[:, None]).sum())
        expected += float((p * cut).sum())
    assert expected > 40  # the check has power: ~e^-40 chance of no such token by luck
    assert abs(below - expected) < 5 * expected ** 0.5, (below, expected)  # Poisson-binomial s.d. <= sqrt(mean)


@pytest.mark.parametrize("estimator", ["token", "sample"])
def test_both_estimators_give_exactly_zero_against_itself(checkpoint, tmp_path, estimator):
    """The harness on the checkpoint against itself (loaded twice, by path): exactly 0."""
    config = {"generation": {"max_new_tokens": 8, "batch_size": 8},
              "kl": {"num_samples": 2, "estimator": estimator}}
    out = evaluate_checkpoint(str(checkpoint), unique_prompts(6), reference=str(checkpoint), config=config,
                              out_dir=tmp_path, progress=False)
    kl = json.loads((tmp_path / "eval.json").read_text())["kl"]
    assert kl == out["kl"] and kl["estimator"] == estimator
    assert kl["kl"] == 0.0
    assert kl["sampled_log_ratio"] == 0.0
    assert kl["stderr"] == 0.0
    assert kl["mean_policy_logprob"] == kl["mean_reference_logprob"]
    assert kl.get("reference_is_policy")


def test_without_the_shortcut_both_estimators_are_zero_to_float_noise(checkpoint):
    """The same weights under two ids, so the reference runs its own forward pass and the
    policy's side comes from what sampling recorded: the token estimator is 0 to float64
    rounding, the sampled log-ratio to float32 rounding (KV-cached steps against a full
    forward, about 1e-7 per token; the checkpoint's options gave about 2e-2)."""
    policy = load_policy(str(checkpoint), model_id="penalised-a")
    reference = load_policy(str(checkpoint), model_id="penalised-b")
    common = dict(num_samples=4, max_new_tokens=8, batch_size=32, seed=2, progress=False)
    token = estimate_kl(policy, reference, unique_prompts(8), estimator="token", **common)
    sample = estimate_kl(policy, reference, unique_prompts(8), estimator="sample", **common)
    assert 0.0 <= token["kl"] <= 1e-9
    assert abs(sample["kl"]) <= 1e-5
    assert abs(token["sampled_log_ratio"]) <= 1e-5
    for result in (token, sample):
        assert result["policy_logprobs_from_sampling"]  # the recorded side, not a second forward
        assert result.get("reference_is_policy") is False


def test_a_configuration_that_cannot_be_neutralised_is_refused(checkpoint, monkeypatch):
    """A model whose generate() would still resolve a non-neutral option (a model class
    adding its own, say) is refused with an error naming the option, before sampling."""
    from transformers import GenerationConfig

    from trl_plus.eval.generation import check_neutral_generation

    with pytest.raises(RecipeError, match="min_p=0.2"):
        check_neutral_generation(GenerationConfig(min_p=0.2, do_sample=True), GenerationSettings(), "x")
    with pytest.raises(RecipeError, match="suppress_tokens"):
        check_neutral_generation(GenerationConfig(suppress_tokens=[5]), GenerationSettings(temperature=0), "x")
    with pytest.raises(RecipeError, match="top_k=50"):
        check_neutral_generation(GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=50,
                                                  max_new_tokens=32, num_return_sequences=1),
                                 GenerationSettings(), "x")

    policy = load_policy(str(checkpoint), model_id="stubborn")
    real = policy.model._prepare_generation_config

    def adds_its_own(config, **kwargs):
        resolved, model_kwargs = real(config, **kwargs)
        resolved.repetition_penalty = 1.3
        return resolved, model_kwargs

    monkeypatch.setattr(policy.model, "_prepare_generation_config", adds_its_own)
    with pytest.raises(RecipeError, match="repetition_penalty=1.3"):
        sample_token_ids(policy, encode_prompts(policy.tokenizer, ["the movie"]), GenerationSettings(max_new_tokens=4),
                         progress=False)
    assert policy.model.generation_config.repetition_penalty == 3.0  # restored after the refusal


def test_position_kl_is_never_negative_and_zero_log_zero_is_zero():
    import torch

    from trl_plus.eval.kl import _position_kl

    logp = torch.log_softmax(torch.tensor([[0.0, 1.0, float("-inf")], [2.0, 0.5, -1.0]]), dim=-1)
    assert torch.equal(_position_kl(logp, logp), torch.zeros(2))  # not NaN from 0 * (-inf - -inf)
    noisy = logp + torch.tensor([[1e-7, -1e-7, 0.0], [-1e-7, 1e-7, 2e-7]])  # not quite normalised any more
    assert (_position_kl(logp, noisy) >= 0).all() and (_position_kl(noisy, logp) >= 0).all()
    q = torch.log_softmax(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), dim=-1)
    p = logp.exp()
    by_hand = (p * (logp - q)).nan_to_num(0.0).sum(-1)
    assert torch.allclose(_position_kl(logp, q), by_hand, atol=1e-6)


def test_cli_eval_of_the_checkpoint_against_itself_prints_its_summary(checkpoint, tmp_path, capsys):
    from trl_plus.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in unique_prompts(5)))
    out = tmp_path / "eval"
    code = main(["eval", str(checkpoint), "--reference", str(checkpoint), "--prompts", str(prompts),
                 "--out", str(out), "--max-new-tokens", "6", "--kl-samples", "2", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "KL to reference: 0.000 ± 0.000" in printed
    results = json.loads((out / "eval.json").read_text())
    assert results["kl"]["kl"] == 0.0 and results["kl"]["sampled_log_ratio"] == 0.0


def test_the_summary_prints_n_a_for_a_missing_kl():
    from trl_plus.commands.eval import summary_text

    text = summary_text({"checkpoint": "c", "reference": "r", "prompts": {"count": 3},
                         "kl": {"kl": None, "stderr": None, "estimator": "token", "num_samples": 2}})
    assert "KL to reference: n/a ± n/a (s.e.; token estimator, 2 sample(s) per prompt)" in text
    line = summary_text({"checkpoint": "c", "reference": "r", "prompts": {"count": 3},
                         "kl": {"kl": 0.25, "stderr": float("nan"), "estimator": "sample", "num_samples": 1}})
    assert "KL to reference: 0.250 ± n/a (s.e.; sample estimator, 1 sample(s) per prompt)" in line
