"""``trl-plus eval``'s inputs, checked before any model loads or any completion is drawn:
the prompt set (empty file, whitespace-only prompts, bytes that are not UTF-8, lines that
are no rows), the checkpoint (a folder that holds no model, an adapter whose base model is
missing) and the data of every lm-eval task named. Each: one line, exit 2, nothing written."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from trl_plus.cli import main
from trl_plus.errors import DataError, RecipeError
from trl_plus.eval import load_prompts

WORDS = ["was", "is", "felt", "seemed"]


def write_prompts(path: Path, prompts: list) -> Path:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# -- prompt sets ---------------------------------------------------------------------------------


def test_whitespace_only_prompts_are_refused_or_dropped_and_counted(tmp_path, capsys, monkeypatch):
    """They were generated for and judged; as in training (``data.drop_empty``) they are
    counted and dropped on request, and refused otherwise."""
    prompts = write_prompts(tmp_path / "p.jsonl", [f"review : it {WORDS[0]}", "   ", "\n\t", f"review : it {WORDS[1]}"])
    with pytest.raises(DataError, match=r"eval.prompts: 2 of 4 prompts of .*p.jsonl are empty or whitespace only "
                                        r"\(the first: row 1\); remove them, or drop them with --drop-empty"):
        load_prompts(str(prompts))
    kept = load_prompts(str(prompts), drop_empty=True)
    assert kept.prompts == ["review : it was", "review : it is"] and kept.empty_dropped == 2
    assert kept.head(1).empty_dropped == 2
    with pytest.raises(DataError, match=r"every prompt of .* is empty or whitespace only \(2\)"):
        load_prompts(str(write_prompts(tmp_path / "e.jsonl", ["", " "])), drop_empty=True)
    out = tmp_path / "eval"
    args = ["eval", "tiny:causal-lm", "--prompts", str(prompts), "--no-kl", "--max-new-tokens", "2", "--out", str(out),
            "--quiet"]
    assert main(args) == 2
    assert "2 of 4 prompts" in one_line_error(capsys) and not out.exists()
    assert main(args + ["--drop-empty"]) == 0
    assert "on 2 prompts (2 empty or whitespace-only prompts dropped)" in capsys.readouterr().out
    results = json.loads((out / "eval.json").read_text())
    assert results["prompts"]["count"] == 2 and results["prompts"]["empty_dropped"] == 2


def test_an_empty_prompt_file_says_it_is_empty(tmp_path, capsys):
    """It said "has no column 'prompt' (columns: )"."""
    for name in ("empty.jsonl", "blank.jsonl", "empty.csv"):
        (tmp_path / name).write_text("" if name.startswith("empty") else "\n  \n")
        with pytest.raises(DataError, match=rf"eval.prompts: the file .*{name} is empty \(no rows\)"):
            load_prompts(str(tmp_path / name))
    out = tmp_path / "eval"
    assert main(["eval", "tiny:causal-lm", "--prompts", str(tmp_path / "empty.jsonl"), "--out", str(out)]) == 2
    assert "is empty (no rows)" in one_line_error(capsys) and not out.exists()


def test_prompt_files_that_are_not_utf8_or_not_rows_are_named(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_bytes(b'{"prompt": "review : it was"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"p.jsonl, line 2: not UTF-8 text \(byte 0xe9 at byte 16 of the line\)"):
        load_prompts(str(bad))
    bad.write_text('{"prompt": "review : it was"}\n"just text"\n')
    with pytest.raises(DataError, match=r"line 2 is not a JSON object .* but str"):
        load_prompts(str(bad))
    # compressed JSON Lines and a JSON array are prompt sets too
    packed = tmp_path / "p.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"prompt": "review : it was"}\n'))
    assert load_prompts(str(packed)).prompts == ["review : it was"]
    array = tmp_path / "p.json"
    array.write_text(json.dumps([{"prompt": "review : it was"}, {"prompt": "review : it is"}]))
    assert load_prompts(str(array)).prompts == ["review : it was", "review : it is"]


# -- checkpoints ----------------------------------------------------------------------------------


def test_a_folder_that_holds_no_model_or_an_adapter_without_its_base_is_named(tmp_path, capsys, tiny_model_path):
    """Both blamed the loading plugin with a hub-id message."""
    prompts = write_prompts(tmp_path / "p.jsonl", [f"review : it {w}" for w in WORDS])
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    (empty / "checkpoint-10").mkdir()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone"),
                                                             "peft_type": "LORA"}))
    hub_adapter = tmp_path / "hub-adapter"
    hub_adapter.mkdir()
    (hub_adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "someorg/not-cached-model",
                                                                 "peft_type": "LORA"}))
    cases = {
        empty: r"checkpoint: the folder '.*not-a-model' holds no model: neither config.json \(a saved model\) nor "
               r"adapter_config.json \(a PEFT adapter\); it holds checkpoints: give one, .*checkpoint-10",
        adapter: r"checkpoint: the adapter in .*adapter is for base model '.*gone', which cannot be found \(no such "
                 r"model folder: .*\); put the base model there, or set base_model_name_or_path",
        hub_adapter: r"the adapter in .*hub-adapter is for base model 'someorg/not-cached-model', which cannot be "
                     r"found \(.*not in the local cache: the hub is offline",
    }
    for folder, message in cases.items():
        out = tmp_path / "eval"
        assert main(["eval", str(folder), "--prompts", str(prompts), "--out", str(out), "--quiet"]) == 2
        err = one_line_error(capsys)
        assert re.search(message, err), err
        assert "plugin" not in err and not out.exists()
    assert main(["eval", str(tiny_model_path), "--reference", str(empty), "--prompts", str(prompts),
                 "--out", str(tmp_path / "eval")]) == 2
    assert "--reference: the folder" in one_line_error(capsys)
    # the loading plugin says the same wherever a model loads (the harness, a pipeline stage)
    from trl_plus.eval.generation import load_policy

    with pytest.raises(RecipeError, match=r"cannot load the policy model: the folder .* holds no model"):
        load_policy(str(empty))
    with pytest.raises(RecipeError, match=r"cannot load the policy model: no such model folder: '.*gone'"):
        load_policy(str(adapter))


# -- lm-eval task data ------------------------------------------------------------------------------


@pytest.fixture
def hub_task(tmp_path, monkeypatch):
    """An lm-eval task index holding one task on a hub dataset (and a group of it): the
    whole lm-eval index takes seconds to build."""
    import trl_plus.eval.benchmarks as benchmarks
    from lm_eval.tasks import TaskManager

    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "hub_task.yaml").write_text(
        "task: hub_task\ndataset_path: someorg/hub-data\ndataset_name: easy\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: q\ndoc_to_choice: choices\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n")
    (folder / "hub_group.yaml").write_text("group: hub_group\ntask:\n  - hub_task\n")
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    monkeypatch.setattr(benchmarks, "task_manager", lambda shipped_only=False: manager)
    return benchmarks


def test_lm_eval_task_data_is_checked_before_any_compute(hub_task, tmp_path, monkeypatch, capsys):
    """``--tasks hellaswag`` with the hub out of reach: a raw ConnectionError traceback
    after generation and judging had run."""
    import trl_plus.eval.harness as harness

    assert hub_task.task_datasets(["hub_group"]) == {"hub_task": {"path": "someorg/hub-data", "name": "easy",
                                                                  "data_files": None}}
    with pytest.raises(RecipeError, match=r"eval.tasks: lm-eval task 'hub_task' needs hub dataset 'someorg/hub-data' "
                                          r"\(easy\), which is not in the local cache and the hub is offline.*"
                                          r"load_dataset\('someorg/hub-data', 'easy'\).*--tasks trl_plus_offline"):
        hub_task.check_tasks(["hub_group"])

    def unreachable(self, repo_id, **kw):
        raise ConnectionError(f"Couldn't reach '{repo_id}' on the Hub")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.HfApi.dataset_info", unreachable)
    with pytest.raises(RecipeError, match=r"not in the local cache, and the hub could not be reached \(ConnectionError\)"):
        hub_task.check_tasks(["hub_task"])

    def no_compute(*args, **kwargs):
        raise AssertionError("generated before the task data was checked")

    monkeypatch.setattr(harness, "sample_completions", no_compute)
    monkeypatch.setattr(harness, "load_policy", no_compute)
    prompts = write_prompts(tmp_path / "p.jsonl", [f"review : it {w}" for w in WORDS])
    out = tmp_path / "eval"
    assert main(["eval", "tiny:causal-lm", "--prompts", str(prompts), "--tasks", "hub_task", "--out", str(out)]) == 2
    assert "hub could not be reached" in one_line_error(capsys) and not out.exists()
    # an unknown name is said at once too
    with pytest.raises(RecipeError, match=r"unknown lm-eval task 'hub_tsk'. Did you mean: hub_task\?"):
        hub_task.check_tasks(["hub_tsk"])


def test_the_offline_pack_passes_the_task_data_check():
    from trl_plus.eval.benchmarks import check_tasks, offline_tasks, task_datasets

    check_tasks(["trl_plus_offline"])
    found = task_datasets(offline_tasks())
    assert set(found) == set(offline_tasks()) and all(Path(d["data_files"]["test"]).is_file() for d in found.values())


def test_a_pipeline_checks_its_task_data_before_any_stage(hub_task, tmp_path, monkeypatch, capsys):
    """``compare`` would train every run and then fail in its eval stage."""
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "quickstart", "--set", "eval.tasks=[hub_task]"]) == 2
    err = one_line_error(capsys)
    assert "eval.tasks: lm-eval task 'hub_task' needs hub dataset 'someorg/hub-data'" in err
    assert main(["validate", "quickstart", "--set", "eval.tasks=[hub_tsk]"]) == 2
    assert "unknown lm-eval task 'hub_tsk'" in capsys.readouterr().err
