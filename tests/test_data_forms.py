"""A dataset is in one form (every row plain text, or every row chat messages), and chat
messages are recognised in every form ``datasets`` stores them: a list of structs, a list
of JSON values (``List(Json())``: messages whose keys or value types differ from row to
row, as in tool-call data), structs with a JSON field, and whole JSON values."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import trl
from datasets import Dataset, Json, List
from transformers import AutoModelForCausalLM

import trl_plus
from trl_plus.data.prepare import prepare_dataset
from trl_plus.data.rows import DataOptions, check_rows, conversational_column
from trl_plus.errors import DataError
from trl_plus.data.splits import load_split
from trl_plus.recipe import DataSplit

from test_bad_data import CHAT_TEMPLATE, dpo_config, rows, write_jsonl

COLUMNS = ("prompt", "chosen", "rejected")


def plain(n: int = 8) -> list[dict]:
    return rows(n)


def chat(n: int = 8) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows(n)]


def load(path: Path, plugin_manager, **kw):
    return load_split(DataSplit(path=str(path), **kw), plugin_manager, "data.train").dataset


# -- case 16: one form per dataset ---------------------------------------------------------------


@pytest.mark.parametrize("first", ["chat", "plain"])
def test_mixed_chat_and_plain_rows_are_refused_naming_the_first_row_of_the_other_form(
        tmp_path, plugin_manager, tiny_tokenizer, first):
    """Chat rows first trained silently, plain rows first crashed inside TRL; with a
    tokenizer without a chat template the start-up check did not fire. Now: one message,
    whatever on_error says, naming the first row of the other form and row 0."""
    head, tail = (chat(4), plain(4)) if first == "chat" else (plain(4), chat(4))
    data = load(write_jsonl(tmp_path / "mixed.jsonl", head + tail), plugin_manager)
    assert tiny_tokenizer.chat_template is None
    other, form = ("plain text", "chat messages") if first == "chat" else ("chat messages", "plain text")
    for options in (DataOptions(), DataOptions(on_error="drop")):
        with pytest.raises(DataError, match=rf"train dataset row 4: column 'prompt' holds {other}, but row 0 "
                                            rf"\(column 'prompt'\) holds {form}; every row .* one form"):
            prepare_dataset(data, COLUMNS, "train", options=options, processing_class=tiny_tokenizer)


def test_one_form_is_checked_across_columns_and_batches(monkeypatch):
    import trl_plus.data.rows as row_checks

    mixed_row = chat(3)
    mixed_row[1]["chosen"] = " plain ."  # a chat prompt with a plain answer
    data = Dataset.from_list(mixed_row, on_mixed_types="use_json")
    with pytest.raises(DataError, match=r"row 1: column 'chosen' holds plain text, but row 0 \(column 'prompt'\)"):
        check_rows(data, COLUMNS, "train")
    monkeypatch.setattr(row_checks, "CHECK_BATCH", 3)  # the other form in a later batch
    data = Dataset.from_list(plain(7) + chat(1), on_mixed_types="use_json")
    with pytest.raises(DataError, match=r"row 7: column 'prompt' holds chat messages, but row 0"):
        check_rows(data, COLUMNS, "train")
    # a dropped row is no row of the other form: null prompts, then plain text
    data = Dataset.from_list([{**plain(1)[0], "prompt": None}] + plain(3))
    kept, report = check_rows(data, COLUMNS, "train", DataOptions(on_error="drop"))
    assert len(kept) == 3 and report["invalid_rows"] == 1


# -- case 21: chat messages in every storage form of datasets -------------------------------------

CALL = {"type": "function", "function": {"name": "lookup", "arguments": {"topic": "plot"}}}
CALL_2 = {"type": "function", "function": {"name": "count", "arguments": {"n": 3}}}


def tool_rows(n: int = 8) -> list[dict]:
    """Tool-call preference rows whose messages differ in keys (tool_calls on some, name on
    tool results) and argument types: datasets stores their messages as JSON values."""
    out = chat(n)
    for i, r in enumerate(out):
        r["chosen"] = [{"role": "assistant", "tool_calls": [CALL if i % 2 else CALL_2]},
                       {"role": "tool", "name": "lookup", "content": "it was good"},
                       {"role": "assistant", "content": r["chosen"][0]["content"]}]
    return out


def content_rows(n: int = 8) -> list[dict]:
    """Content as text on some messages and as a list of parts on others (a JSON field)."""
    out = chat(n)
    for i, r in enumerate(out):
        if i % 2:
            r["prompt"] = [{"role": "user", "content": [{"type": "text", "text": r["prompt"][0]["content"]}]}]
    return out


def stored(tmp_path, plugin_manager, make, how: str):
    if how == "jsonl":  # datasets' JSON loader
        return load(write_jsonl(tmp_path / f"{make.__name__}.jsonl", make()), plugin_manager)
    return Dataset.from_list(make(), on_mixed_types="use_json")


@pytest.mark.parametrize("how", ["jsonl", "from_list"])
def test_messages_stored_as_json_values_pass_the_checks(tmp_path, plugin_manager, tiny_tokenizer, how):
    data = stored(tmp_path, plugin_manager, tool_rows, how)
    assert data.features["chosen"] == List(Json())  # list<item: extension<arrow.json>>, as TRL's toolcall data
    content = stored(tmp_path, plugin_manager, content_rows, how)
    assert content.features["prompt"].feature["content"] == Json()  # a struct with a JSON field
    for dataset in (data, content):
        kept, report = check_rows(dataset, COLUMNS, "train")
        assert len(kept) == 8 and report["invalid_rows"] == 0
        assert conversational_column(dataset, COLUMNS) == "prompt"
        with pytest.raises(DataError, match=r"conversational .* no chat template"):  # the start-up check fires
            prepare_dataset(dataset, COLUMNS, "train", processing_class=tiny_tokenizer)
    # a message TRL cannot render is still named, in JSON form too
    bad = tool_rows()
    bad[5]["chosen"][1] = {"name": "lookup", "content": "no role"}
    with pytest.raises(DataError, match=r"row 5: column 'chosen' is chat messages with one TRL cannot render"):
        check_rows(Dataset.from_list(bad, on_mixed_types="use_json"), COLUMNS, "train")
    bad[5]["chosen"] = []
    kept, report = check_rows(Dataset.from_list(bad, on_mixed_types="use_json"), COLUMNS, "train",
                              DataOptions(on_error="drop"))
    assert len(kept) == 7 and report["invalid_rows"] == 1


@pytest.mark.parametrize("trainer_cls", [trl_plus.DPOTrainer, trl.DPOTrainer], ids=["trl_plus", "trl"])
def test_json_stored_tool_call_data_trains_like_trl(tmp_path, plugin_manager, tiny_model_path, tiny_tokenizer,
                                                    one_thread, trainer_cls):
    """What trl.DPOTrainer trains on, trl_plus.DPOTrainer trains on too (it refused it:
    "column 'chosen' holds list<item: extension<arrow.json>> values")."""
    tiny_tokenizer.chat_template = CHAT_TEMPLATE
    data = load(write_jsonl(tmp_path / "tools.jsonl", tool_rows()), plugin_manager)
    assert data.features["chosen"] == List(Json())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    extra = {"plugin_manager": plugin_manager} if trainer_cls is trl_plus.DPOTrainer else {}
    trainer = trainer_cls(model, copy.deepcopy(model), args=dpo_config(tmp_path, "run", max_length=256),
                          train_dataset=data, processing_class=tiny_tokenizer, **extra)
    trainer.train()
    assert trainer.state.global_step == 2
    if trainer_cls is trl_plus.DPOTrainer:
        report = json.loads((tmp_path / "run" / "filter_report.json").read_text())["train"]
        assert report["rows_out"] == 8 and report["checks"]["invalid_rows"] == 0
