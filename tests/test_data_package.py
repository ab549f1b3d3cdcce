"""The data package's shape: loading a split returns its load report (nothing is kept on
the side), the report is handed to ``prepare_dataset`` explicitly, the filter chain and
the filter report live in ``trl_plus.data``, and the package reaches no higher than its
layer (no plugin manager, trainers, components or recipe)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from datasets import Dataset

from trl_plus.data.filters import FilterChain
from trl_plus.data.prepare import prepare_dataset
from trl_plus.data.report import FILTER_REPORT, write_filter_report
from trl_plus.data.rows import DataOptions
from trl_plus.data.splits import LoadedSplit, builtin_dataset_loader, data_file_check, load_split
from trl_plus.recipe import DataSplit

PREFS = Path(__file__).resolve().parents[1] / "recipes" / "data" / "tiny_prefs.jsonl"
COLUMNS = ("prompt", "chosen", "rejected")


def _with_bad_line(tmp_path: Path) -> Path:
    lines = PREFS.read_text().splitlines()[:8]
    lines[2] = '{"prompt": "cut off'
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_split_returns_the_dataset_with_its_load_report(tmp_path, plugin_manager):
    data = _with_bad_line(tmp_path)
    loaded = load_split(DataSplit(path=str(data)), plugin_manager, "data.train", "drop")
    assert isinstance(loaded, LoadedSplit)
    dataset, report = loaded
    assert len(dataset) == 7
    assert report["malformed_lines"] == 1 and report["examples"][0]["line"] == 3 and report["file"] == str(data)
    clean = load_split(DataSplit(path=str(PREFS)), plugin_manager, "data.train")
    assert clean.report is None and len(clean.dataset) > 0
    assert load_split(None, plugin_manager, "data.eval") == LoadedSplit(None, None)


def test_the_load_report_is_passed_not_remembered(tmp_path, plugin_manager):
    dataset, report = load_split(DataSplit(path=str(_with_bad_line(tmp_path))), plugin_manager, "data.train", "drop")
    reports: dict = {}
    prepare_dataset(dataset, COLUMNS, "train", options=DataOptions("drop"), reports=reports)
    assert reports["train"]["checks"]["malformed_lines"] == 0  # not given: nothing picked up on the side
    assert "malformed_examples" not in reports["train"]["checks"]
    prepare_dataset(dataset, COLUMNS, "train", options=DataOptions("drop"), reports=reports, load_report=report)
    checks = reports["train"]["checks"]
    assert checks["malformed_lines"] == 1 and checks["malformed_examples"] == report["examples"]


def test_the_data_file_check_is_given_its_hooks(tmp_path, plugin_manager):
    data = tmp_path / "prefs.jsonlines"
    data.write_text(PREFS.read_text())
    assert builtin_dataset_loader(plugin_manager) and builtin_dataset_loader(plugin_manager.pm)
    assert "suffix '.jsonlines'" in data_file_check(data, "raise", plugin_manager)


def test_the_filter_chain_and_the_filter_report_live_in_data(tmp_path, plugin_manager):
    chain = plugin_manager.components().filter_chain([{"name": "regex", "column": "prompt", "pattern": "^a"}])
    assert isinstance(chain, FilterChain)
    kept = chain.apply_to_dataset(Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}]))
    assert len(kept) == 1
    write_filter_report(str(tmp_path / "run"), {"train": chain.report()})
    assert json.loads((tmp_path / "run" / FILTER_REPORT).read_text())["train"]["filters"][0]["dropped"] == 1


def test_the_data_package_reaches_no_higher_than_its_layer():
    code = (
        "import sys\n"
        "import trl_plus\n"
        "before = set(sys.modules)\n"
        "import trl_plus.data.report\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('trl_plus')))\n"
        "import trl_plus.data.files, trl_plus.data.json_files, trl_plus.data.columns, trl_plus.data.rows\n"
        "import trl_plus.data.filters, trl_plus.data.prepare, trl_plus.data.splits\n"
        "above = ('manager', 'trainers', 'components', 'loading', 'recipe', 'pipeline', 'eval', 'commands', 'cli')\n"
        "print(sorted(m for m in sys.modules if m.startswith('trl_plus.') and m.split('.')[1] in above))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    leaf, above = out.stdout.splitlines()
    assert leaf == "['trl_plus.data', 'trl_plus.data.report']"  # the filter report: a leaf
    assert above == "[]"
