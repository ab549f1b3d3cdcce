"""The reference log-prob cache: same losses, reused across runs, invalidated by any change."""

import types

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_plus.trainers.dpo import DPOConfig, DPOTrainer

from test_dpo import config as dpo_test_config  # the DPOConfig every DPO test trains with


def config(tmp_path, name, **kw):
    return dpo_test_config(tmp_path, name, **{"max_steps": 3, **kw})


def build(tmp_path, name, model_path, data, plugin_manager, tokenizer=None, perturb=False, precompute=False, **kw):
    """A trainer and the number of reference forward passes its construction ran."""
    model = AutoModelForCausalLM.from_pretrained(model_path)
    ref = AutoModelForCausalLM.from_pretrained(model_path)
    if perturb:
        with torch.no_grad():
            next(ref.parameters()).add_(1e-3)
    calls = []
    ref.register_forward_hook(lambda *args: calls.append(1))
    trainer = DPOTrainer(
        model, ref, args=config(tmp_path, name, precompute_ref_log_probs=precompute), train_dataset=data,
        processing_class=tokenizer or AutoTokenizer.from_pretrained(model_path), plugin_manager=plugin_manager, **kw,
    )
    return trainer, len(calls)


def losses(trainer):
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_cached_losses_are_identical_and_the_second_run_skips_the_reference(
    tmp_path, tiny_model_path, tiny_preference_dataset, plugin_manager
):
    cache = tmp_path / "ref_logps"
    plain, _ = build(tmp_path, "plain", tiny_model_path, tiny_preference_dataset, plugin_manager)
    precomputed, _ = build(tmp_path, "precomputed", tiny_model_path, tiny_preference_dataset, plugin_manager, precompute=True)
    first, first_calls = build(tmp_path, "first", tiny_model_path, tiny_preference_dataset, plugin_manager, ref_logps_cache=cache)
    second, second_calls = build(tmp_path, "second", tiny_model_path, tiny_preference_dataset, plugin_manager, ref_logps_cache=str(cache))

    assert plain.ref_logps_cache_info == {} and not plain.args.precompute_ref_log_probs
    assert first.ref_logps_cache_info["train"]["hit"] is False and first_calls > 0
    assert second.ref_logps_cache_info["train"]["hit"] is True and second_calls == 0
    assert first.ref_logps_cache_info["train"]["key"] == second.ref_logps_cache_info["train"]["key"]
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".safetensors"]
    assert first.train_dataset["ref_chosen_logps"] == second.train_dataset["ref_chosen_logps"]
    expected = losses(precomputed)
    assert len(expected) == 3
    # Bit for bit what TRL's own precompute gives, computed or loaded.
    assert losses(first) == expected
    assert losses(second) == expected
    # Without precompute the reference runs on each shuffled training batch, and the
    # padding a row shares there can move the last bit of a sum; nothing more.
    assert losses(plain) == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_any_change_makes_a_new_key_but_row_order_does_not(
    tmp_path, tiny_model_path, tiny_preference_dataset, plugin_manager
):
    cache = tmp_path / "ref_logps"

    def key_of(name, data=tiny_preference_dataset, **kw):
        trainer, calls = build(tmp_path, name, tiny_model_path, data, plugin_manager, ref_logps_cache=cache, **kw)
        info = trainer.ref_logps_cache_info["train"]
        assert info["hit"] is (calls == 0)
        return info["key"], info["hit"], trainer

    base, hit, base_trainer = key_of("base")
    assert not hit
    # A seed reorders batches, not rows; and rows in another order are the same rows.
    shuffled = tiny_preference_dataset.shuffle(seed=3)
    key, hit, trainer = key_of("shuffled", shuffled)
    assert (key, hit) == (base, True)
    def by_row(dataset):
        return {(r["prompt"], r["chosen"], r["rejected"]): (r["ref_chosen_logps"], r["ref_rejected_logps"]) for r in dataset}

    assert by_row(trainer.train_dataset) == by_row(base_trainer.train_dataset)

    rows = tiny_preference_dataset.to_list()
    edited = Dataset.from_list([{**rows[0], "rejected": rows[0]["rejected"] + " bad"}] + rows[1:])
    fewer = Dataset.from_list(rows[1:])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<sep>"]})
    changed = {
        "edited row": key_of("edited", edited),
        "dropped row": key_of("fewer", fewer),
        "reference weights": key_of("weights", perturb=True),
        "tokenizer": key_of("tokenizer", tokenizer=tokenizer),
    }
    for what, (key, hit, _) in changed.items():
        assert not hit and key != base, what
    assert len({key for key, _, _ in changed.values()}) == len(changed)
    # Each of them now hits too.
    assert key_of("edited again", edited)[1] is True


def test_the_config_field_turns_it_on_and_the_callers_config_is_left_alone(
    tmp_path, tiny_model_path, tiny_preference_dataset, plugin_manager
):
    args = DPOConfig(
        output_dir=str(tmp_path / "cfg"), per_device_train_batch_size=8, max_steps=1, bf16=False, report_to="none",
        save_strategy="no", max_length=64, ref_logps_cache=str(tmp_path / "from_config"),
    )
    trainer = DPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_path), AutoModelForCausalLM.from_pretrained(tiny_model_path),
        args=args, train_dataset=tiny_preference_dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path), plugin_manager=plugin_manager,
    )
    assert trainer.ref_logps_cache_info["train"]["file"].startswith(str(tmp_path / "from_config"))
    assert trainer.args.precompute_ref_log_probs and not args.precompute_ref_log_probs
    with pytest.raises(ValueError, match="sync_ref_model"):
        DPOTrainer(
            AutoModelForCausalLM.from_pretrained(tiny_model_path), AutoModelForCausalLM.from_pretrained(tiny_model_path),
            args=config(tmp_path, "sync", sync_ref_model=True), train_dataset=tiny_preference_dataset,
            processing_class=AutoTokenizer.from_pretrained(tiny_model_path), plugin_manager=plugin_manager,
            ref_logps_cache=tmp_path / "x",
        )


def test_recipe_key_resolves_against_the_recipe_and_the_pipeline_shares_one_folder(tmp_path):
    from trl_plus.pipeline.policy import PolicyRun, _dpo_recipe
    from trl_plus.recipe import build_trainer_config, validate_dict

    (tmp_path / "prefs.jsonl").write_text('{"prompt": "a", "chosen": " b", "rejected": " c"}\n')
    raw = {"trainer": "dpo", "model": {"name_or_path": "tiny:causal-lm"}, "data": {"train": "prefs.jsonl"},
           "dpo": {"ref_logps_cache": "cache/ref"}}
    recipe = validate_dict(raw, source=tmp_path / "recipe.yaml")
    args = build_trainer_config(recipe.spec, str(tmp_path / "out"), device_defaults=False)
    assert isinstance(args, DPOConfig) and args.ref_logps_cache == str(tmp_path / "cache" / "ref")

    root = tmp_path / "run"
    (root / "pairs").mkdir(parents=True)
    (root / "pairs" / "preferences.jsonl").write_text('{"prompt": "a", "chosen": " b", "rejected": " c"}\n')
    ctx = types.SimpleNamespace(
        run=types.SimpleNamespace(path=lambda *parts: root.joinpath(*parts)),
        config=types.SimpleNamespace(stages=types.SimpleNamespace(dpo=types.SimpleNamespace(args={}), checkpoints=2)),
    )
    folders = {_dpo_recipe(ctx, PolicyRun("dpo", beta, seed, "beta"))["dpo"]["ref_logps_cache"]
               for beta in (0.05, 0.1) for seed in (0, 1)}
    assert folders == {str(root / "dpo" / "ref_logps")}
