"""Filters that judge rows by token counts run in the DPO trainer on TRL's own token ids,
after TRL tokenises: the length filter drops exactly the rows TRL would truncate, the text
filters keep their place before tokenisation, and the filter report says which stage ran."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM

import trl_plus
from trl_plus.errors import ComponentError, DataError

PROMPTS = ["review : the movie was", "review : the plot is", "review : the story is", "question :"]


def make_rows(n: int) -> list[dict]:
    """Rows of varied token lengths: every third chosen is long, every fourth rejected is."""
    out = []
    for i in range(n):
        chosen = " great ." * (1 + 9 * (i % 3 == 0))
        rejected = " awful , dull ." * (1 + 5 * (i % 4 == 1))
        out.append({"prompt": f"{PROMPTS[i % 4]} {i}", "chosen": chosen, "rejected": rejected})
    return out


def config(tmp_path, name, **kw):
    values = dict(
        output_dir=str(tmp_path / name), per_device_train_batch_size=4, max_steps=1, learning_rate=1e-3, bf16=False,
        activation_checkpointing=False, report_to="none", save_strategy="no", max_length=64, seed=0, disable_tqdm=True,
    )
    values.update(kw)
    return trl.DPOConfig(**values)


@pytest.fixture
def model(tiny_model_path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_path)


def trl_ids(model, tokenizer, tmp_path, data):
    """TRL's own tokenised rows of ``data``: what the length filter must judge."""
    plain = trl.DPOTrainer(model, copy.deepcopy(model), args=config(tmp_path, "plain"), train_dataset=Dataset.from_list(data),
                           processing_class=tokenizer)
    return plain.train_dataset


def test_length_filter_drops_exactly_the_rows_trl_would_truncate(tmp_path, model, tiny_tokenizer, plugin_manager):
    data = make_rows(24)
    tokenised = trl_ids(model, tiny_tokenizer, tmp_path, data)
    p, c, r = (np.array([len(x) for x in tokenised[col]]) for col in ("prompt_ids", "chosen_ids", "rejected_ids"))
    limit = int(np.median(p + np.maximum(c, r)))
    expected = [row["prompt"] for row, k in zip(tokenised, (p + c <= limit) & (p + r <= limit)) if k]
    assert 0 < len(expected) < len(data)

    trainer = trl_plus.DPOTrainer(
        model, copy.deepcopy(model), args=config(tmp_path, "ours"), train_dataset=Dataset.from_list(data),
        processing_class=tiny_tokenizer, plugin_manager=plugin_manager, filters=[{"name": "length", "max_length": limit}],
    )
    assert trainer.train_dataset["prompt"] == expected
    report = json.loads((tmp_path / "ours" / "filter_report.json").read_text())["train"]
    length = report["filters"][0]
    assert length["stage"] == "token_ids" and length["rows_in"] == len(data)
    assert length["dropped"] == len(data) - len(expected) == report["rows_in"] - report["rows_out"]
    assert length["reasons"]["over_max_length"] == int((p + c > limit).sum() + (p + r > limit).sum())
    assert len(length["examples"]) == 3 and set(length["examples"][0]) == {"prompt", "chosen", "rejected"}


def test_prompt_and_completion_bounds_count_trls_tokens(tmp_path, model, tiny_tokenizer, plugin_manager):
    data = make_rows(16)
    tokenised = trl_ids(model, tiny_tokenizer, tmp_path, data)
    p, c, r = (np.array([len(x) for x in tokenised[col]]) for col in ("prompt_ids", "chosen_ids", "rejected_ids"))
    text = len(tiny_tokenizer(" great .", add_special_tokens=False)["input_ids"])
    # The short chosen completion has one token more in TRL's ids (the EOS it appends): a
    # lower bound of that count keeps it, which a count of the text alone would not.
    assert int(c.min()) == text + 1
    low, high, prompt = text + 1, int(np.median(np.concatenate([c, r]))), int(np.median(p))
    trainer = trl_plus.DPOTrainer(
        model, copy.deepcopy(model), args=config(tmp_path, "ours"), train_dataset=Dataset.from_list(data),
        processing_class=tiny_tokenizer, plugin_manager=plugin_manager,
        filters=[{"name": "length", "min_completion_tokens": low, "max_completion_tokens": high,
                  "max_prompt_tokens": prompt}],
    )
    keep = (c >= low) & (c <= high) & (r >= low) & (r <= high) & (p <= prompt)
    assert 0 < int(keep.sum()) < len(data)
    assert trainer.train_dataset["prompt"] == [row["prompt"] for row, k in zip(tokenised, keep) if k]
    reasons = json.loads((tmp_path / "ours" / "filter_report.json").read_text())["train"]["filters"][0]["reasons"]
    assert reasons["prompt_too_long"] == int((p > prompt).sum())
    assert reasons["completion_too_long"] == int((c > high).sum() + (r > high).sum())


def test_text_filters_run_first_and_token_filters_see_what_is_left(tmp_path, model, tiny_tokenizer, plugin_manager):
    data = make_rows(12)
    data += [dict(row) for row in data[:4]]  # four exact duplicates
    trainer = trl_plus.DPOTrainer(
        model, copy.deepcopy(model), args=config(tmp_path, "ours"), train_dataset=Dataset.from_list(data),
        processing_class=tiny_tokenizer, plugin_manager=plugin_manager,
        filters=[{"name": "length", "max_completion_tokens": 12}, "dedup"],
    )
    report = json.loads((tmp_path / "ours" / "filter_report.json").read_text())["train"]
    length, dedup = report["filters"]
    assert "stage" not in dedup and dedup["rows_in"] == 16 and dedup["dropped"] == 4
    assert length["stage"] == "token_ids" and length["rows_in"] == 12 and length["dropped"] > 0
    assert report["rows_out"] == len(trainer.train_dataset) == 12 - length["dropped"]


class TokenBudget:
    """A third-party filter with a token stage: keeps rows whose chosen is shorter than rejected."""

    def __init__(self):
        self.seen = []

    def __call__(self, batch):  # the text form, never used by the DPO trainer
        raise AssertionError("the DPO trainer must call filter_token_lengths, not the text form")

    def filter_token_lengths(self, lengths):
        self.seen.append({k: type(v).__name__ for k, v in lengths.items()})
        return lengths["chosen"] < lengths["rejected"]


def test_any_filter_with_a_token_stage_gets_numpy_lengths(tmp_path, model, tiny_tokenizer, plugin_manager):
    data = make_rows(12)
    budget = TokenBudget()
    trainer = trl_plus.DPOTrainer(
        model, copy.deepcopy(model), args=config(tmp_path, "ours"), train_dataset=Dataset.from_list(data),
        processing_class=tiny_tokenizer, plugin_manager=plugin_manager, filters=[budget],
    )
    assert budget.seen == [{"prompt": "ndarray", "chosen": "ndarray", "rejected": "ndarray"}]
    kept = trainer.train_dataset
    assert len(kept) > 0 and all(len(a) < len(b) for a, b in zip(kept["chosen_ids"], kept["rejected_ids"]))


def test_a_token_filter_with_the_wrong_number_of_decisions_is_named(tmp_path, model, tiny_tokenizer, plugin_manager):
    class Broken(TokenBudget):
        def filter_token_lengths(self, lengths):
            return [True]

    with pytest.raises(ComponentError, match=r"data filter 'Broken' returned 1 decisions for 8 rows"):
        trl_plus.DPOTrainer(
            model, copy.deepcopy(model), args=config(tmp_path, "ours"), train_dataset=Dataset.from_list(make_rows(8)),
            processing_class=tiny_tokenizer, plugin_manager=plugin_manager, filters=[Broken()],
        )


def test_nothing_left_after_the_token_stage_writes_the_report_first(tmp_path, model, tiny_tokenizer, plugin_manager):
    with pytest.raises(DataError) as err:
        trl_plus.DPOTrainer(
            model, copy.deepcopy(model), args=config(tmp_path, "none"), train_dataset=Dataset.from_list(make_rows(8)),
            processing_class=tiny_tokenizer, plugin_manager=plugin_manager, filters=[{"name": "length", "max_length": 2}],
        )
    report_file = tmp_path / "none" / "filter_report.json"
    assert f"see {report_file}" in str(err.value) and "filters dropped {'length': 8}" in str(err.value)
    assert json.loads(report_file.read_text())["train"]["rows_out"] == 0


def test_token_lengths_follow_a_filtered_or_shuffled_datasets_row_order():
    from trl_plus.data.filters import _list_lengths

    base = Dataset.from_dict({"ids": [[1] * (i % 7) for i in range(50)]})
    for ds in (base, base.shuffle(seed=3), base.filter(lambda r: len(r["ids"]) != 3).shuffle(seed=1).select(range(20))):
        assert _list_lengths(ds, "ids").tolist() == [len(x) for x in ds["ids"]]
