"""trl_plus.DPOTrainer: same loss as TRL's, learns, follows the beta schedule, filters, hooks."""

import copy
import json

import pytest
import torch
import trl
from transformers import AutoModelForCausalLM

import trl_plus
from trl_plus.trainers.dpo import DPOTrainer


def config(tmp_path, name, **kw):
    values = dict(
        output_dir=str(tmp_path / name), per_device_train_batch_size=8, max_steps=2, learning_rate=1e-3,
        bf16=False, activation_checkpointing=False, report_to="none", logging_steps=1, save_strategy="no",
        max_length=64, seed=0,
    )
    values.update(kw)
    return trl.DPOConfig(**values)


def test_loss_equals_trl_on_the_same_batch(tmp_path, tiny_model_path, tiny_tokenizer, tiny_preference_dataset, plugin_manager):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    ours = DPOTrainer(
        model, ref, args=config(tmp_path, "ours"), train_dataset=tiny_preference_dataset,
        processing_class=tiny_tokenizer, plugin_manager=plugin_manager,
    )
    theirs = trl.DPOTrainer(
        copy.deepcopy(model), copy.deepcopy(ref), args=config(tmp_path, "theirs"),
        train_dataset=tiny_preference_dataset, processing_class=tiny_tokenizer,
    )
    batch = next(iter(ours.get_train_dataloader()))
    assert len(ours.train_dataset) == len(theirs.train_dataset) == len(tiny_preference_dataset)
    with torch.no_grad():
        a = ours.compute_loss(ours.model, ours._prepare_inputs(batch))
        b = theirs.compute_loss(theirs.model, theirs._prepare_inputs(batch))
    assert torch.isfinite(a) and a.item() == pytest.approx(b.item(), abs=1e-6)
    assert ours.beta == theirs.beta == 0.1


def test_learns_and_beta_follows_schedule(tmp_path, tiny_model_path, tiny_tokenizer, tiny_preference_dataset, plugin_manager):
    seen_betas = []

    class Watch:
        @trl_plus.hookimpl
        def trl_plus_step_end(self, trainer, step, metrics):
            seen_betas.append((step, trainer.beta))

    plugin_manager.pm.register(Watch(), name="watch")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    trainer = DPOTrainer(
        model, ref, args=config(tmp_path, "learn", max_steps=30, per_device_train_batch_size=16, logging_steps=5),
        train_dataset=tiny_preference_dataset, processing_class=tiny_tokenizer, plugin_manager=plugin_manager,
        kl={"name": "linear", "start": 0.05, "end": 0.35, "steps": 30},
    )
    applied = []
    original = trainer._apply_schedule
    trainer._apply_schedule = lambda step: (original(step), applied.append((step, trainer.beta)))
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    first, last = history[0], history[-1]
    assert last["rewards/accuracies"] >= 0.9
    assert last["rewards/margins"] > first["rewards/margins"] + 0.5
    assert last["loss"] < first["loss"] - 0.2
    # trainer.beta is the schedule's value at every step, and every logged row carries it
    assert [s for s, _ in applied] == list(range(30))
    assert all(beta == pytest.approx(0.05 + 0.3 * step / 30) for step, beta in applied)
    for row in trainer.state.log_history:
        assert "beta" in row
    assert [h["beta"] for h in history] == pytest.approx([0.05 + 0.3 * (h["step"] - 1) / 30 for h in history])
    assert [s for s, _ in seen_betas][:len(history)] == [h["step"] for h in history]


def test_filters_run_before_tokenisation_and_report(tmp_path, tiny_model_path, tiny_tokenizer, tiny_preference_dataset, plugin_manager):
    from datasets import concatenate_datasets

    doubled = concatenate_datasets([tiny_preference_dataset, tiny_preference_dataset.select(range(10))])
    created = []

    class Watch:
        @trl_plus.hookimpl
        def trl_plus_trainer_created(self, trainer, recipe):
            created.append(len(trainer.train_dataset))

    plugin_manager.pm.register(Watch(), name="watch")
    trainer = DPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_path), AutoModelForCausalLM.from_pretrained(tiny_model_path),
        args=config(tmp_path, "filters"), train_dataset=doubled, processing_class=tiny_tokenizer,
        plugin_manager=plugin_manager,
        filters=["dedup", {"name": "regex", "column": "chosen", "pattern": "great"}],
    )
    great = sum("great" in r for r in tiny_preference_dataset["chosen"])
    assert created == [great] and len(trainer.train_dataset) == great
    report = json.loads((tmp_path / "filters" / "filter_report.json").read_text())["train"]
    assert report["rows_in"] == len(doubled) and report["rows_out"] == great
    assert report["filters"][0] == {**report["filters"][0], "name": "dedup", "dropped": 10}
    assert report["filters"][1]["dropped"] == len(tiny_preference_dataset) - great


def test_filters_dropping_everything_is_a_clear_error(tmp_path, tiny_model_path, tiny_tokenizer, tiny_preference_dataset, plugin_manager):
    with pytest.raises(trl_plus.DataError, match="dropped every row"):
        DPOTrainer(
            AutoModelForCausalLM.from_pretrained(tiny_model_path), AutoModelForCausalLM.from_pretrained(tiny_model_path),
            args=config(tmp_path, "empty"), train_dataset=tiny_preference_dataset, processing_class=tiny_tokenizer,
            plugin_manager=plugin_manager, filters=[{"name": "regex", "column": "chosen", "pattern": "zzz"}],
        )


def test_a_bad_row_is_named_before_tokenisation(tmp_path, tiny_model_path, tiny_tokenizer, plugin_manager):
    from datasets import Dataset

    rows = [{"prompt": "a", "chosen": " b", "rejected": " c"}, {"prompt": "a", "chosen": " b", "rejected": None}]
    with pytest.raises(trl_plus.DataError, match=r"train dataset row 1: column 'rejected' is None"):
        DPOTrainer(
            AutoModelForCausalLM.from_pretrained(tiny_model_path), AutoModelForCausalLM.from_pretrained(tiny_model_path),
            args=config(tmp_path, "badrow"), train_dataset=Dataset.from_list(rows), processing_class=tiny_tokenizer,
            plugin_manager=plugin_manager,
        )


def test_resume_continues_the_beta_schedule(tmp_path, one_thread):
    """An adaptive beta is saved with each checkpoint and continues on resume, not from init."""
    import math

    from trl_plus.cli import main

    out = tmp_path / "run"
    common = ["--set", "kl={name: adaptive, init: 0.1, target: 0.01, horizon: 1}", "--set", "dpo.logging_steps=1",
              "--set", "dpo.save_steps=6", "--set", "dpo.disable_tqdm=true"]
    assert main(["train", "tiny-dpo", "--output-dir", str(out), "--set", "dpo.max_steps=6"] + common) == 0
    saved = json.loads((out / "checkpoint-6" / "dpo_state.json").read_text())
    assert saved["schedule"]["value"] == pytest.approx(saved["beta"]) and saved["beta"] != pytest.approx(0.1)

    resumed = tmp_path / "resumed"
    assert main(["train", "tiny-dpo", "--output-dir", str(resumed), "--resume", str(out / "checkpoint-6"),
                 "--set", "dpo.max_steps=8"] + common) == 0
    history = json.loads((resumed / "trainer_state.json").read_text())["log_history"]
    after = [row["beta"] for row in history if row.get("step", 0) > 6 and "beta" in row]
    # one adaptive step (at most x1.2 or x0.8) from where the run left off, far from init
    assert after and abs(math.log(after[0] / saved["beta"])) <= math.log(1.25) < abs(math.log(after[0] / 0.1))
