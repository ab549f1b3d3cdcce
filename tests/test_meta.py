"""Meta-tests that keep everyone honest: every hook is tested and documented."""

import inspect
import re
from pathlib import Path

import pytest

from trl_plus import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("trl_plus_"))


def signature(name: str) -> str:
    params = inspect.signature(getattr(hookspecs, name)).parameters
    return f"{name}({', '.join(params)})"


def test_hooks_exist():
    assert len(HOOKS) >= 11


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook):
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_meta.py")
    # implemented in a test (as a plugin would), or called through the facade
    facade_method = {
        "trl_plus_register_reward_sources": "reward_sources",
        "trl_plus_register_kl_schedules": "kl_schedules",
        "trl_plus_register_data_filters": "data_filters",
        "trl_plus_register_judges": "judges",
    }.get(hook, hook.removeprefix("trl_plus_"))
    assert f"def {hook}(" in tests or re.search(rf"\.{facade_method}\b", tests), hook


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    readme = (ROOT / "README.md").read_text()
    assert signature(hook) in readme, f"README lacks `{signature(hook)}`"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_has_a_reference_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    params = inspect.signature(getattr(hookspecs, hook)).parameters
    assert doc and all(f":param {p}:" in doc for p in params), hook
    if getattr(hookspecs, hook).trl_plus_spec["firstresult"]:
        assert "Stops at first non-None result" in doc


def troubleshooting_rows() -> list[list[str]]:
    """The README troubleshooting table's rows, as cells."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row] for row in rows[1:]]  # the header row off


def test_every_troubleshooting_row_names_a_test_that_exists():
    rows = troubleshooting_rows()
    assert len(rows) >= 20, "the troubleshooting table should cover the failures users meet"
    for row in rows:
        refs = re.findall(r"(tests/test_\w+\.py)::(\w+)", row[-1])
        assert refs, f"row without a test: {row[0]}"
        for path, name in refs:
            source = (ROOT / path).read_text() if (ROOT / path).exists() else ""
            assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name} (row {row[0]!r}) does not exist"
