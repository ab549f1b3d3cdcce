"""Bad data is named: missing columns, empty strings, None and non-text values, malformed
JSON lines, empty files, over-long rows, nothing left after filtering, chat data without a
chat template, a model folder without a tokenizer; and every message form TRL trains on
(tool calls, tool results, multimodal content lists) passes the checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM

import trl_plus
from trl_plus.data.prepare import prepare_dataset
from trl_plus.data.rows import DataOptions
from trl_plus.errors import DataError, RecipeError
from trl_plus.data.splits import load_split, require_columns
from trl_plus.loading import load_tokenizer
from trl_plus.recipe import DataSplit, ModelSection, validate_dict

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PREFS = RECIPES / "data" / "tiny_prefs.jsonl"

# Renders plain content, the text parts of a content list, tool calls and tool results.
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "<{{ m['role'] }}>"
    "{%- if m['content'] is string %}{{ m['content'] }}"
    "{%- elif m['content'] %}{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"
    "{%- endif -%}"
    "{%- if m['tool_calls'] %}{% for c in m['tool_calls'] %} call {{ c['function']['name'] }}"
    " {{ c['function']['arguments'] | tojson }}{% endfor %}{% endif -%}"
    "{{ eos_token }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}<assistant>{% endif -%}"
)


def rows(n: int = 8) -> list[dict]:
    lines = [json.loads(line) for line in PREFS.read_text().splitlines() if line]
    return [dict(lines[i % len(lines)], prompt=f"{lines[i % len(lines)]['prompt']} {i}") for i in range(n)]


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items))
    return path


def dpo_config(tmp_path, name, **kw):
    values = dict(
        output_dir=str(tmp_path / name), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
        bf16=False, activation_checkpointing=False, report_to="none", logging_steps=1, save_strategy="no",
        max_length=64, seed=0, disable_tqdm=True,
    )
    values.update(kw)
    return trl.DPOConfig(**values)


def split(path, **kw) -> DataSplit:
    return DataSplit(path=str(path), **kw)


# -- columns and values ----------------------------------------------------------------------


def test_missing_column_names_it_and_the_columns_present(tmp_path, plugin_manager):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "good": "b", "bad": "c"}])
    dataset = load_split(split(data), plugin_manager, "data.train").dataset
    with pytest.raises(DataError, match=r"no column 'chosen', 'rejected' \(columns: prompt, good, bad\)"):
        require_columns(dataset, ["chosen", "rejected"], "data.train")
    with pytest.raises(DataError, match=r"data.train.columns: .*no column 'best' to rename \(columns: prompt, good, bad\)"):
        load_split(split(data, columns={"best": "chosen"}), plugin_manager, "data.train")


def test_none_and_non_text_values_name_row_and_column():
    data = rows(6)
    data[3]["rejected"] = None
    with pytest.raises(DataError, match=r"train dataset row 3: column 'rejected' is None.*data.on_error: drop"):
        prepare_dataset(Dataset.from_list(data), ("prompt", "chosen", "rejected"), "train")
    numbers = Dataset.from_list([dict(r, chosen=i) for i, r in enumerate(rows(4))])
    with pytest.raises(DataError, match=r"train dataset row 0: column 'chosen' holds int64 values"):
        prepare_dataset(numbers, ("prompt", "chosen", "rejected"), "train")
    broken_chat = [{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
                    "rejected": [{"role": "assistant", "content": "b"}]} for _ in range(4)]
    broken_chat[2]["chosen"] = [{"role": "assistant", "content": None}]
    with pytest.raises(DataError, match=r"row 2: column 'chosen' is chat messages with one TRL cannot render"):
        prepare_dataset(Dataset.from_list(broken_chat), ("prompt", "chosen", "rejected"), "train")
    roles_only = [dict(r, chosen=[{"role": "assistant"}]) for r in chat_rows(3)]
    with pytest.raises(DataError, match=r"row 0: column 'chosen' is chat messages with one TRL cannot render"):
        prepare_dataset(Dataset.from_list(roles_only), ("prompt", "chosen", "rejected"), "train")
    no_messages = chat_rows(3)
    no_messages[1]["rejected"] = []
    reports: dict = {}
    kept = prepare_dataset(Dataset.from_list(no_messages), ("prompt", "chosen", "rejected"), "train",
                           options=DataOptions(on_error="drop"), reports=reports)
    assert len(kept) == 2 and reports["train"]["checks"]["invalid_rows"] == 1
    assert reports["train"]["checks"]["examples"][0]["row"] == 1


def test_empty_strings_are_counted_and_dropped_on_request():
    data = rows(10)
    data[1]["chosen"], data[4]["rejected"], data[7]["prompt"] = "", "   ", ""
    columns = ("prompt", "chosen", "rejected")
    reports: dict = {}
    kept = prepare_dataset(Dataset.from_list(data), columns, "train", reports=reports)
    assert len(kept) == 10
    checks = reports["train"]["checks"]
    assert checks["empty"] == {"prompt": 1, "chosen": 1, "rejected": 1} and checks["empty_dropped"] == 0
    kept = prepare_dataset(Dataset.from_list(data), columns, "train", options=DataOptions(drop_empty=True), reports=reports)
    assert len(kept) == 7 and reports["train"]["rows_out"] == 7 and reports["train"]["checks"]["empty_dropped"] == 3
    assert "" not in kept["chosen"] and "" not in kept["prompt"]


# -- files -----------------------------------------------------------------------------------


def test_empty_file_says_it_is_empty(tmp_path, plugin_manager):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"data.train.path: the file '.*empty.jsonl' is empty"):
        load_split(split(empty), plugin_manager, "data.train")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n  \n")
    with pytest.raises(DataError, match=r"blank.jsonl' is empty"):
        load_split(split(blank), plugin_manager, "data.train")


def test_malformed_json_line_names_file_line_and_parse_error(tmp_path, plugin_manager):
    lines = [json.dumps(r) for r in rows(1000)]
    lines[500] = '{"prompt": "a", "chosen": "b", "rejected": '
    data = write_jsonl(tmp_path / "prefs.jsonl", lines)
    with pytest.raises(DataError, match=r"prefs.jsonl, line 501: not valid JSON \(Expecting value at column the end of the line\)"):
        load_split(split(data), plugin_manager, "data.train")
    lines[500] = "[1, 2]"
    write_jsonl(data, lines)
    with pytest.raises(DataError, match=r"line 501: not a JSON object but a list"):
        load_split(split(data), plugin_manager, "data.train")
    # A value of another type is no parse error: the row check names it (0-based row 500).
    lines[500] = json.dumps(dict(rows(1)[0], chosen=7))
    dataset = load_split(split(write_jsonl(data, lines)), plugin_manager, "data.train").dataset
    with pytest.raises(DataError, match=r"train dataset row 500: column 'chosen' is 7 \(int\)"):
        prepare_dataset(dataset, ("prompt", "chosen", "rejected"), "train")


def model_recipe(tmp_path, data: Path, **data_options) -> dict:
    return {
        "trainer": "dpo",
        "model": {"name_or_path": "tiny:causal-lm"},
        "data": {"train": {"path": str(data)}, **data_options},
        "dpo": {"per_device_train_batch_size": 8, "max_steps": 2, "max_length": 64, "learning_rate": 1e-3,
                "save_strategy": "no", "logging_steps": 1, "report_to": "none", "disable_tqdm": True},
        # Keeps rows 0, 50, 100, ... (prompts end in their index): TRL tokenises 100 rows, not 9,900.
        "filters": [{"name": "regex", "column": "prompt", "pattern": " (0|[0-9]*[05]0)$"}],
    }


def test_one_percent_bad_rows_strict_stops_and_drop_trains(tmp_path, plugin_manager, one_thread):
    """10,000 rows, 1% bad (50 malformed lines, 50 rows with None): strict mode names the
    first, ``on_error: drop`` drops and counts both kinds and trains."""
    from trl_plus.trainers.dpo import train_from_recipe

    good = [json.dumps(r) for r in rows(10_000)]
    lines = list(good)
    for i in range(100, 10_000, 200):
        lines[i] = lines[i][: len(lines[i]) // 2]  # cut off mid-line
    for i in range(150, 10_000, 200):
        lines[i] = json.dumps(dict(json.loads(lines[i]), rejected=None))
    data = write_jsonl(tmp_path / "big.jsonl", lines)
    strict = validate_dict(model_recipe(tmp_path, data), plugin_manager)
    with pytest.raises(DataError, match=r"big.jsonl, line 101: not valid JSON"):
        train_from_recipe(strict, str(tmp_path / "strict"), hooks=plugin_manager)
    # Only null values: the file loads, and the row check names the first (row 150, 0-based).
    write_jsonl(data, [line if i % 200 == 150 else good[i] for i, line in enumerate(lines)])
    with pytest.raises(DataError, match=r"train dataset row 150: column 'rejected' is None"):
        train_from_recipe(strict, str(tmp_path / "strict"), hooks=plugin_manager)
    write_jsonl(data, lines)
    out = tmp_path / "drop"
    trainer = train_from_recipe(validate_dict(model_recipe(tmp_path, data, on_error="drop"), plugin_manager), str(out),
                                hooks=plugin_manager)
    assert trainer.state.global_step == 2
    report = json.loads((out / "filter_report.json").read_text())["train"]
    assert report["checks"]["malformed_lines"] == 50 and report["checks"]["invalid_rows"] == 50
    assert report["checks"]["malformed_examples"][0]["line"] == 101
    regex = report["filters"][0]
    assert report["rows_in"] == 9_950 and regex["rows_in"] == 9_900 and report["rows_out"] == 9_900 - regex["dropped"] == 100


def test_rows_over_max_length_are_counted_by_the_length_filter(tiny_tokenizer, plugin_manager):
    data = rows(12)
    for i in (2, 5, 9):
        data[i]["chosen"] = " great ." * 30
    chain = plugin_manager.components(tokenizer=tiny_tokenizer).filter_chain([{"name": "length", "max_length": 40}])
    reports: dict = {}
    kept = prepare_dataset(Dataset.from_list(data), ("prompt", "chosen", "rejected"), "train", chain, reports=reports)
    length = reports["train"]["filters"][0]
    assert len(kept) == 9 and length["dropped"] == 3 and length["reasons"]["over_max_length"] == 3
    assert {e["chosen"][:14] for e in length["examples"]} == {" great . great"}


def test_nothing_left_writes_the_report_first_and_says_where(tmp_path, tiny_model_path, tiny_tokenizer, plugin_manager):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    out = tmp_path / "none-left"
    with pytest.raises(DataError) as err:
        trl_plus.DPOTrainer(
            model, copy.deepcopy(model), args=dpo_config(tmp_path, "none-left"), train_dataset=Dataset.from_list(rows(8)),
            processing_class=tiny_tokenizer, plugin_manager=plugin_manager,
            filters=[{"name": "regex", "column": "prompt", "pattern": "^nothing"}],
        )
    report_file = out / "filter_report.json"
    assert f"see {report_file}" in str(err.value) and "filters dropped {'regex': 8}" in str(err.value)
    assert json.loads(report_file.read_text())["train"]["filters"][0]["dropped"] == 8


# -- tokenizers and chat templates -----------------------------------------------------------


def chat_rows(n: int = 8) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": r["prompt"]}], "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows(n)]


def test_chat_data_without_chat_template_fails_at_start_up(tmp_path, tiny_model_path, tiny_tokenizer, plugin_manager):
    assert tiny_tokenizer.chat_template is None
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    with pytest.raises(DataError, match=r"train dataset is conversational \(column 'prompt'.*no chat template"):
        trl_plus.DPOTrainer(
            model, copy.deepcopy(model), args=dpo_config(tmp_path, "dpo"), train_dataset=Dataset.from_list(chat_rows()),
            processing_class=tiny_tokenizer, plugin_manager=plugin_manager,
        )
    prompts = Dataset.from_list([{"prompt": r["prompt"]} for r in chat_rows()])
    config = trl_plus.PPOConfig(output_dir=str(tmp_path / "ppo"), per_device_train_batch_size=4, num_generations=2,
                                max_steps=1, bf16=False, report_to="none")
    with pytest.raises(DataError, match=r"train dataset is conversational.*no chat template"):
        trl_plus.PPOTrainer(
            model, args=config, train_dataset=prompts, processing_class=tiny_tokenizer,
            rewards=[{"name": "python", "function": "trl_plus.recipes.toy_rewards:char_share"}],
            plugin_manager=plugin_manager,
        )


def test_model_folder_without_tokenizer_is_named(tmp_path, tiny_model_path):
    folder = tmp_path / "weights-only"
    AutoModelForCausalLM.from_pretrained(tiny_model_path).save_pretrained(folder)
    with pytest.raises(RecipeError, match=r"model.name_or_path: the folder '.*weights-only' has no tokenizer"):
        load_tokenizer(ModelSection(name_or_path=str(folder)))


# -- every message form TRL trains on --------------------------------------------------------

CALL = {"type": "function", "function": {"name": "lookup", "arguments": {"topic": "plot"}}}


def tool_call_rows(n: int = 8) -> list[dict]:
    """The assistant's chosen turn is a tool call with no content."""
    out = chat_rows(n)
    for r in out:
        r["chosen"] = [{"role": "assistant", "tool_calls": [CALL]}]
    return out


def tool_result_rows(n: int = 8) -> list[dict]:
    """The prompt ends on a tool result the assistant answers."""
    out = chat_rows(n)
    for r in out:
        r["prompt"] = r["prompt"] + [{"role": "assistant", "tool_calls": [CALL]},
                                     {"role": "tool", "name": "lookup", "content": "it was good"}]
    return out


def content_list_rows(n: int = 8) -> list[dict]:
    """Multimodal content lists (text parts only: a text model)."""
    out = chat_rows(n)
    for r in out:
        for key in ("prompt", "chosen", "rejected"):
            r[key] = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in r[key]]
    return out


@pytest.mark.parametrize("make_rows", [tool_call_rows, tool_result_rows, content_list_rows])
@pytest.mark.parametrize("trainer_cls", [trl_plus.DPOTrainer, trl.DPOTrainer], ids=["trl_plus", "trl"])
def test_every_message_form_trains(tmp_path, tiny_model_path, tiny_tokenizer, plugin_manager, one_thread, make_rows,
                                   trainer_cls):
    tiny_tokenizer.chat_template = CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    extra = {"plugin_manager": plugin_manager, "filters": ["distinct_pair", "dedup"]} if trainer_cls is trl_plus.DPOTrainer else {}
    trainer = trainer_cls(
        model, copy.deepcopy(model), args=dpo_config(tmp_path, "run", max_length=256), train_dataset=Dataset.from_list(make_rows()),
        processing_class=tiny_tokenizer, **extra,
    )
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 2 and all(loss == loss for loss in losses)
    if trainer_cls is trl_plus.DPOTrainer:
        report = json.loads((tmp_path / "run" / "filter_report.json").read_text())["train"]
        assert report["rows_out"] == 8 and report["checks"]["invalid_rows"] == 0


def test_length_filter_tokenises_only_near_a_bound_and_decides_exactly(tiny_tokenizer):
    """Rows whose UTF-8 length + 1 is within every bound are not tokenised; the decisions
    and reasons equal those of counting every row."""
    from trl_plus.plugins.filters.length import LengthFilter

    class CountingBackend:  # the fast tokenizer's backend, counting the texts it encodes
        def __init__(self):
            self.inner, self.texts = tiny_tokenizer.backend_tokenizer, 0
            self.normalizer = self.inner.normalizer

        def encode_batch_fast(self, texts, **kw):
            self.texts += len(texts)
            return self.inner.encode_batch_fast(texts, **kw)

    class Counting:
        def __init__(self):
            self.backend_tokenizer = CountingBackend()

        @property
        def texts(self):
            return self.backend_tokenizer.texts

    batch = {k: [r[k] for r in rows(300)] for k in ("prompt", "chosen", "rejected")}
    batch["chosen"][7] = "é" * 40  # two bytes a character
    tokenised = []
    for bounds in (dict(max_prompt_tokens=30, max_completion_tokens=12, max_length=44),
                   dict(max_prompt_tokens=14, min_completion_tokens=3, max_completion_tokens=3, max_length=16)):
        screened, exact = LengthFilter(tokenizer=Counting(), **bounds), LengthFilter(tokenizer=Counting(), **bounds)
        exact._screen = False
        keep = screened(batch)
        assert keep == exact(batch) and screened.reasons == exact.reasons and 0 < sum(keep) < 300
        tokenised.append((screened.tokenizer.texts, exact.tokenizer.texts))
    assert tokenised[0][0] < 300 < tokenised[0][1] == 900  # loose bounds: most rows never tokenised
    assert all(n > 0 for n in screened.reasons.values())  # tight bounds: every reason, decided exactly


def test_data_options_are_validated_with_their_key(tmp_path, plugin_manager):
    raw = model_recipe(tmp_path, PREFS, on_error="skip")
    with pytest.raises(RecipeError, match=r"data.on_error.*'raise' or 'drop'"):
        validate_dict(raw, plugin_manager)
    recipe = validate_dict(model_recipe(tmp_path, PREFS, on_error="drop", drop_empty=True), plugin_manager)
    assert DataOptions.of(recipe) == DataOptions("drop", True) and DataOptions.of(None) == DataOptions("raise", False)
