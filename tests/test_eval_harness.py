"""The harness end to end on tiny checkpoints: win rates, cache, KL, lm-eval, CLI."""

import itertools
import json

import numpy as np
import pytest
import torch

from trl_plus.eval import estimate_kl, evaluate_checkpoint, generate, GenerationSettings
from trl_plus.eval.generation import Policy
from trl_plus.eval.kl import sequence_logprobs
from trl_plus.testing import preference_rows

WORD = "great"
COUNTER = f"""
def count_word(prompts, completions, **columns):
    return [c.count({WORD!r}) for c in completions]
"""


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = preference_rows()[:24]
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "reference": r["rejected"]}) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def counter_ref(tmp_path_factory):
    path = tmp_path_factory.mktemp("judge") / "counter.py"
    path.write_text(COUNTER)
    return f"{path}:count_word"


@pytest.fixture(scope="module")
def great_model_path(tiny_model_path, tmp_path_factory):
    """The tiny model fine-tuned for a few steps to say the judge's word over and over."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    texts = [r["prompt"] + f" {WORD}" * 6 for r in preference_rows()[:32]]
    enc = tok(texts, return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(40):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    path = tmp_path_factory.mktemp("great")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_checkpoint_against_itself_ci_contains_half(tiny_model_path, prompts_file, counter_ref, tmp_path):
    # same checkpoint, reference generations drawn with a different seed (same ones would be all ties);
    # a fixed model id keeps the derived sampling seeds, hence the outcome, independent of the temporary path
    ref = generate(tiny_model_path, json_prompts(prompts_file), GenerationSettings(max_new_tokens=8, seed=1),
                   model_id="tiny-self", progress=False)
    out = evaluate_checkpoint(
        tiny_model_path, prompts_with_refs(prompts_file, ref, tmp_path), model_id="tiny-self",
        config={"judges": [{"name": "reward_model", "model": "tiny:reward-model"}],
                "generation": {"max_new_tokens": 8, "seed": 0}, "kl": {"enabled": False}},
        progress=False,
    )
    w = out["win_rates"]["reward_model"]
    assert w["win_rate_ci"][0] <= 0.5 <= w["win_rate_ci"][1]
    assert w["wins"] > 0 and w["losses"] > 0


def json_prompts(path):
    return [json.loads(line)["prompt"] for line in path.read_text().splitlines()]


def prompts_with_refs(path, refs, tmp_path):
    out = tmp_path / "with_refs.jsonl"
    out.write_text("".join(json.dumps({"prompt": p, "reference": r}) + "\n" for p, r in zip(json_prompts(path), refs)))
    return str(out)


def test_worse_model_by_construction_loses(great_model_path, tiny_model_path, prompts_file, counter_ref, tmp_path):
    out = evaluate_checkpoint(
        great_model_path, str(prompts_file), reference=str(tiny_model_path),
        config={"judges": [{"name": "python", "function": counter_ref}],
                "gold": {"name": "python", "function": counter_ref},
                "generation": {"max_new_tokens": 8}, "kl": {"num_samples": 2}},
        out_dir=tmp_path, progress=False,
    )
    w = out["win_rates"]["reward_source:python"]
    assert w["win_rate"] > 0.9 and w["win_rate_ci"][0] > 0.8 and w["win_rate_ci"][1] - w["win_rate_ci"][0] < 0.2
    assert out["gold_reward"]["mean"] > out["gold_reward"]["reference"]["mean"] + 1
    assert out["kl"]["kl"] > 3 * out["kl"]["stderr"] > 0
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["manifest"]["prompt_set"]["sha256"] == out["prompts"]["sha256"]
    assert saved["manifest"]["versions"]["lm_eval"]


def test_http_judge_failure_is_counted_and_generations_are_cached(tiny_model_path, prompts_file, tmp_path, monkeypatch, json_endpoint):
    monkeypatch.setenv("EVAL_JUDGE_TOKEN", "tok-9f8e7d-secret")
    srv = json_endpoint(lambda body: (200, b"garbage"))
    config = {"judges": [{"name": "http_pairwise", "url": srv.url, "retries": 1, "backoff": 0.0,
                          "token_env": "EVAL_JUDGE_TOKEN"}],
              "generation": {"max_new_tokens": 6}, "kl": {"enabled": False}}
    out = evaluate_checkpoint(tiny_model_path, str(prompts_file), config=config, out_dir=tmp_path, progress=False)
    w = out["win_rates"]["http_pairwise"]
    assert w["failed"] == w["pairs"] == 24 and w["judged"] == 0
    assert "tok-9f8e7d-secret" not in (tmp_path / "eval.json").read_text()
    cache = (tmp_path / "generations.jsonl").read_text()
    assert len(cache.splitlines()) == 1

    # a re-run with another judge reuses the cached generations: no model is run
    def no_sampling(*a, **k):
        raise AssertionError("regenerated")

    monkeypatch.setattr("trl_plus.eval.generation.sample_token_ids", no_sampling)
    config["judges"] = [{"name": "reward_model", "model": "tiny:reward-model"}]
    again = evaluate_checkpoint(tiny_model_path, str(prompts_file), config=config, out_dir=tmp_path, progress=False)
    assert again["win_rates"]["reward_model"]["judged"] == 24
    assert len((tmp_path / "generations.jsonl").read_text().splitlines()) == 1


# -- KL against exact enumeration on a micro model ---------------------------------------


def micro_policy(seed, scale=30.0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "c": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=6, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)  # peaked distributions: a KL well away from 0
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    return Policy(model.eval(), tokenizer, f"micro-{seed}")


def exact_kl(p, q, prompt, max_new_tokens):
    """Sum over every completion (any token, stopping at the first EOS or the length cap)."""
    ids = p.tokenizer(prompt)["input_ids"]
    seqs = []
    for length in range(1, max_new_tokens + 1):
        for s in itertools.product(range(6), repeat=length):
            ends_early = s[-1] == 2
            if 2 in s[:-1] or (length < max_new_tokens and not ends_early):
                continue
            seqs.append(list(s))
    lp = sequence_logprobs(p.model, [ids] * len(seqs), seqs)
    lq = sequence_logprobs(q.model, [ids] * len(seqs), seqs)
    assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-4)
    return float((np.exp(lp) * (lp - lq)).sum())


def test_kl_matches_exact_enumeration():
    p, q = micro_policy(0), micro_policy(1)
    prompts = ["a b", "c"]
    exact = np.mean([exact_kl(p, q, x, 3) for x in prompts])
    assert exact > 0.5
    for estimator in ("token", "sample"):
        est = estimate_kl(p, q, prompts, num_samples=1500, max_new_tokens=3, seed=0, progress=False, estimator=estimator)
        assert abs(est["kl"] - exact) < 4 * est["stderr"], estimator
        assert est["stderr"] < 0.1 * exact, estimator
    same = estimate_kl(p, p, prompts, num_samples=50, max_new_tokens=3, progress=False)
    assert same["kl"] == pytest.approx(0.0, abs=1e-5)


def test_adapter_checkpoint_dataset_prompts_and_evaluation_done_hook(
    tiny_model_path, tiny_preference_dataset, plugin_manager, register_plugin, tmp_path
):
    import trl_plus
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(tmp_path / "adapter")
    seen = []

    class Recorder:
        @staticmethod
        @trl_plus.hookimpl
        def trl_plus_evaluation_done(results, output_dir):
            seen.append((results["checkpoint"], output_dir))

    register_plugin(Recorder(), "recorder")
    out = evaluate_checkpoint(
        str(tmp_path / "adapter"), tiny_preference_dataset, hooks=plugin_manager, out_dir=tmp_path / "eval",
        config={"reference_column": "chosen", "max_prompts": 6, "generation": {"max_new_tokens": 4},
                "judges": [{"name": "reward_model", "model": "tiny:reward-model"}], "kl": {"enabled": False}},
        progress=False,
    )
    assert out["win_rates"]["reward_model"]["pairs"] == 6
    assert seen == [(str(tmp_path / "adapter"), str(tmp_path / "eval"))]


SOMETIMES_FAILS = """
import math

def score(prompts, completions, **columns):
    out = []
    for p, c in zip(prompts, completions):
        if p.endswith("#unscored"):
            out.append(None)  # no opinion on any completion of this prompt
        elif len(c) % 3 == 0:
            out.append(math.nan if len(c) % 2 else None)
        else:
            out.append(float(len(c)))
    return out
"""


def test_failed_gold_scores_are_left_out_and_counted(tiny_model_path, tmp_path, monkeypatch):
    from trl_plus.tiny import save_tiny

    module = tmp_path / "gold.py"
    module.write_text(SOMETIMES_FAILS)
    other = save_tiny(tmp_path / "other", "causal-lm", seed=5)
    prompts = [r["prompt"] + (" #unscored" if i % 5 == 0 else "") for i, r in enumerate(preference_rows()[:20])]
    settings = GenerationSettings(max_new_tokens=6, num_samples=2)
    out = evaluate_checkpoint(
        str(tiny_model_path), prompts, reference=str(other), out_dir=tmp_path / "eval", progress=False,
        config={"gold": {"name": "python", "function": f"{module}:score"}, "generation": settings.to_dict(),
                "kl": {"enabled": False}},
    )
    gold = out["gold_reward"]

    # the same numbers from the cached completions, by hand
    def expected(completions):
        rows = [prompts[i // 2] for i in range(len(completions))]
        scores = [None if p.endswith("#unscored") or len(c) % 3 == 0 else float(len(c))
                  for p, c in zip(rows, completions)]
        per_prompt = []
        for i in range(len(prompts)):
            valid = [s for s in scores[2 * i:2 * i + 2] if s is not None]
            per_prompt.append(sum(valid) / len(valid) if valid else None)
        return per_prompt, sum(s is None for s in scores)

    monkeypatch.setattr("trl_plus.eval.generation.sample_token_ids", lambda *a, **k: pytest.fail("sampled again"))
    cache = tmp_path / "eval" / "generations.jsonl"
    per_prompt, failed = expected(generate(str(tiny_model_path), prompts, settings, cache, progress=False))
    assert gold["per_prompt"] == per_prompt
    assert all(per_prompt[i] is None for i in range(0, 20, 5))
    valid = [v for v in per_prompt if v is not None]
    assert gold["failed"] == failed >= 8
    assert gold["missing"] == len(prompts) - len(valid) and gold["n"] == len(valid)
    assert gold["mean"] == pytest.approx(np.mean(valid))
    assert gold["ci"][0] <= gold["mean"] <= gold["ci"][1]

    ref_per_prompt, ref_failed = expected(generate(str(other), prompts, settings, cache, stream="reference",
                                                   progress=False))
    ref_valid = [v for v in ref_per_prompt if v is not None]
    assert gold["reference"]["failed"] == ref_failed >= 8
    assert gold["reference"]["n"] == len(ref_valid)
    assert gold["reference"]["mean"] == pytest.approx(np.mean(ref_valid))
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved["gold_reward"]["per_prompt"] == per_prompt
