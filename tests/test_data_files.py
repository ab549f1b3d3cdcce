"""Data files as the loader reads them, checked at start-up (``validate`` and the start of
``train``): every suffix ``datasets`` reads (compressed text too) loads, an unknown one is
named, a CSV header naming a column twice is refused, a line that is not UTF-8 is named
(and dropped under ``data.on_error: drop``); none of them writes anything."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import pytest

from trl_plus.cli import main
from trl_plus.data.prepare import prepare_dataset
from trl_plus.data.rows import DataOptions
from trl_plus.errors import DataError, RecipeError
from trl_plus.data.splits import load_split, require_columns
from trl_plus.recipe import DataSplit, validate_dict

PREFS = Path(__file__).resolve().parents[1] / "recipes" / "data" / "tiny_prefs.jsonl"


def lines(n: int = 12) -> list[str]:
    return PREFS.read_text().splitlines()[:n]


def load(path: Path, plugin_manager, on_error: str = "raise"):
    return load_split(DataSplit(path=str(path)), plugin_manager, "data.train", on_error).dataset


def recipe(data: Path, **data_options) -> dict:
    return {"trainer": "dpo", "model": {"name_or_path": "tiny:causal-lm"},
            "data": {"train": {"path": str(data)}, **data_options}, "dpo": {"max_steps": 1}}


def csv_text(header: str, n: int = 6) -> str:
    rows = [json.loads(line) for line in lines(n)]
    return header + "\n" + "".join(f'"{r["prompt"]}","{r["chosen"]}","{r["rejected"]}"," other"\n' for r in rows)


def test_every_suffix_datasets_reads_loads(tmp_path, plugin_manager):
    """``.ndjson`` and ``train.jsonl.gz`` passed validate and then "could not find" a file that exists."""
    text = "\n".join(lines()) + "\n"
    files = {"a.ndjson": text.encode(), "b.jsonl.gz": gzip.compress(text.encode()),
             "c.JSONL.bz2": bz2.compress(text.encode())}
    tsv = "prompt\tchosen\trejected\n" + "".join(
        "\t".join(json.loads(line)[k] for k in ("prompt", "chosen", "rejected")) + "\n" for line in lines())
    files["d.tsv"] = tsv.encode()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        validate_dict(recipe(tmp_path / name), plugin_manager)
        dataset = load(tmp_path / name, plugin_manager)
        assert len(dataset) == 12 and dataset.column_names == ["prompt", "chosen", "rejected"], name
    # a compressed JSON Lines file with a bad line: named by its line, dropped on request
    bad = lines()
    bad[4] = '{"prompt": "a", '
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(("\n".join(bad) + "\n").encode()))
    with pytest.raises(DataError, match=r"bad.jsonl.gz, line 5: not valid JSON"):
        load(tmp_path / "bad.jsonl.gz", plugin_manager)
    assert len(load(tmp_path / "bad.jsonl.gz", plugin_manager, "drop")) == 11


def test_unknown_suffix_is_named_at_start_up(tmp_path, plugin_manager, capsys):
    data = tmp_path / "prefs.jsonlines"
    data.write_text("\n".join(lines()) + "\n")
    with pytest.raises(RecipeError, match=r"data.train.path: the data file '.*prefs.jsonlines' has the suffix "
                                          r"'.jsonlines', which trl-plus cannot read: convert it to one of .jsonl"):
        validate_dict(recipe(data), plugin_manager)
    with pytest.raises(DataError, match=r"data.train.path: .*suffix '.jsonlines'"):
        load(data, plugin_manager)
    (tmp_path / "r.yaml").write_text(json.dumps(recipe(data)))
    out = tmp_path / "out"
    assert main(["train", str(tmp_path / "r.yaml"), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "suffix '.jsonlines'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_csv_header_naming_a_column_twice_is_refused(tmp_path, plugin_manager):
    """The second ``chosen`` became ``chosen.1`` and was ignored without a word."""
    data = tmp_path / "prefs.csv"
    data.write_text(csv_text("prompt,chosen,rejected,chosen"))
    with pytest.raises(RecipeError, match=r"data.train.path: .*prefs.csv: the header row names column 'chosen' "
                                          r"twice \(columns 2 and 4\); rename or remove one of them"):
        validate_dict(recipe(data), plugin_manager)
    with pytest.raises(DataError, match=r"data.train.path: .*names column 'chosen' twice"):
        load(data, plugin_manager)
    data.write_text(csv_text("prompt,chosen,rejected,other"))
    assert load(data, plugin_manager).column_names == ["prompt", "chosen", "rejected", "other"]


def test_header_names_with_spaces_are_pointed_out(tmp_path, plugin_manager):
    data = tmp_path / "prefs.csv"
    data.write_text(csv_text("prompt, chosen, rejected, other"))
    with pytest.raises(DataError, match=r"no column 'chosen', 'rejected' .*column ' chosen' has spaces or capitals "
                                        r"around the name 'chosen'"):
        require_columns(load(data, plugin_manager), ["chosen", "rejected"], "data.train")


def test_a_line_that_is_not_utf8_is_named_and_dropped_on_request(tmp_path, plugin_manager):
    """pyarrow read the bytes into the dataset: a raw UnicodeDecodeError at the first step,
    and ``data.on_error: drop`` did not help."""
    raw = [line.encode() for line in lines()]
    raw[3] = raw[3][:20] + b"\xe9t\xe9" + raw[3][20:]  # Latin-1, not UTF-8
    data = tmp_path / "prefs.jsonl"
    data.write_bytes(b"\n".join(raw) + b"\n")
    with pytest.raises(RecipeError, match=r"data.train.path: .*prefs.jsonl, line 4: not UTF-8 text \(byte 0xe9 at "
                                          r"byte 21 of the line\); re-encode the file as UTF-8.*data.on_error: drop"):
        validate_dict(recipe(data), plugin_manager)
    with pytest.raises(DataError, match=r"prefs.jsonl, line 4: not UTF-8 text"):
        load(data, plugin_manager)
    validate_dict(recipe(data, on_error="drop"), plugin_manager)  # dropped on loading, so no problem here
    dataset, load_report = load_split(DataSplit(path=str(data)), plugin_manager, "data.train", "drop")
    reports: dict = {}
    prepare_dataset(dataset, ("prompt", "chosen", "rejected"), "train", options=DataOptions("drop"), reports=reports,
                    load_report=load_report)
    checks = reports["train"]["checks"]
    assert len(dataset) == 11 and checks["malformed_lines"] == 1 and checks["malformed_examples"][0]["line"] == 4
    csv = tmp_path / "prefs.csv"
    csv.write_bytes(csv_text("prompt,chosen,rejected,other").encode().replace(b"seemed", b"s\xe9emed", 1))
    with pytest.raises(RecipeError, match=r"prefs.csv, line \d+: not UTF-8 text"):
        validate_dict(recipe(csv), plugin_manager)


def test_a_damaged_compressed_file_is_named_not_a_traceback(tmp_path, plugin_manager):
    """A truncated ``.jsonl.gz`` (or a plain file named ``.gz``) ended in a raw EOFError /
    BadGzipFile, ``data.on_error: drop`` or not."""
    text = ("\n".join(lines()) + "\n").encode()
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(text)[:200])
    (tmp_path / "plain.jsonl.gz").write_bytes(text)
    for name, why in (("cut.jsonl.gz", "ended before the end-of-stream marker"), ("plain.jsonl.gz", "Not a gzipped file")):
        data = tmp_path / name
        with pytest.raises(RecipeError, match=rf"data.train.path: the file '.*{name}' cannot be read as a "
                                              rf"gzip-compressed file: .*{why}.*damaged or truncated"):
            validate_dict(recipe(data), plugin_manager)
        for on_error in ("raise", "drop"):
            with pytest.raises(DataError, match=rf"data.train.path: the file '.*{name}' cannot be read"):
                load(data, plugin_manager, on_error)
    from trl_plus.eval import load_prompts

    with pytest.raises(DataError, match=r"eval.prompts: the file .*cut.jsonl.gz cannot be read"):
        load_prompts(str(tmp_path / "cut.jsonl.gz"))


def test_a_json_object_of_lists_is_not_read_as_one_row(tmp_path, plugin_manager):
    """``{"prompt": [...], "chosen": [...]}`` (columns) or ``{"data": [rows]}`` loaded as a
    single row of lists; one conversation in a ``.json`` file is still one row."""
    rows = [json.loads(line) for line in lines()]
    (tmp_path / "columns.json").write_text(json.dumps({k: [r[k] for r in rows] for k in rows[0]}))
    (tmp_path / "field.json").write_text(json.dumps({"data": rows}))
    (tmp_path / "array.json").write_text(json.dumps(rows))
    (tmp_path / "chat.json").write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}],
                                                    "chosen": [{"role": "assistant", "content": "yes"}],
                                                    "rejected": [{"role": "assistant", "content": "no"}]}))
    with pytest.raises(DataError, match=r"data.train.path: .*columns.json holds one JSON object of lists \(keys: "
                                        r"prompt, chosen, rejected\), which reads as a single row; write one JSON "
                                        r"object a row"):
        load(tmp_path / "columns.json", plugin_manager)
    with pytest.raises(DataError, match=r"field.json holds one JSON object of lists \(keys: data\)"):
        load(tmp_path / "field.json", plugin_manager)
    assert len(load(tmp_path / "array.json", plugin_manager)) == 12
    assert len(load(tmp_path / "chat.json", plugin_manager)) == 1
