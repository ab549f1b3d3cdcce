"""The architecture's rules, checked: import contracts (lint-imports), module sizes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("trl_plus", "eval", "plugins")

pytestmark = pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed")


def _lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` as CI and a user run it: from the repository root, nothing staged."""
    return subprocess.run(["lint-imports"], cwd=root, capture_output=True, text=True, timeout=300)


def _copy_project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in (*PACKAGE_FOLDERS, "recipes"):  # trl_plus's links to eval/, plugins/, recipes/ stay links
        shutil.copytree(ROOT / folder, copy / folder, ignore=ignore, symlinks=True)
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_the_import_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].lower().replace("0 broken", "")


@pytest.mark.parametrize(
    "module, upward, contract",
    [
        # a leaf reaching up into the pipeline: the layers contract breaks
        ("trl_plus/errors.py", "import trl_plus.pipeline.runner", "Layers"),
        # the evaluation reaching into the trainers
        ("eval/stats/power.py", "import trl_plus.trainers.ppo_math", "Eval never imports trainers"),
        # a built-in plugin reaching past the public face
        ("plugins/kl/constant.py", "from trl_plus.recipe import load_recipe", "Plugins use the public face"),
    ],
)
def test_an_upward_import_breaks_a_contract(tmp_path, module, upward, contract):
    copy = _copy_project(tmp_path)
    target = copy / module
    target.write_text(target.read_text() + f"\n\ndef _reach_up():\n    {upward}\n")
    result = _lint(copy)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout


def test_a_cycle_breaks_the_acyclic_contract(tmp_path):
    copy = _copy_project(tmp_path)
    # errors is imported by nearly everything; making it import one of its importers closes a cycle
    target = copy / "trl_plus" / "redact.py"
    target.write_text(target.read_text() + "\n\ndef _around():\n    from trl_plus import tiny  # noqa: F401\n")
    tiny = copy / "trl_plus" / "tiny.py"
    tiny.write_text(tiny.read_text() + "\n\ndef _back():\n    from trl_plus import redact  # noqa: F401\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert any("No import cycles" in line and "BROKEN" in line for line in result.stdout.splitlines()), result.stdout


def _modules(folder: str):
    for path in sorted((ROOT / folder).rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


def test_no_module_is_over_400_lines_and_recipe_modules_under_200():
    too_long = []
    for folder in PACKAGE_FOLDERS:
        for path in _modules(folder):
            lines = len(path.read_text().splitlines())
            limit = 199 if path.parent == ROOT / "trl_plus" / "recipe" else 400
            if lines > limit:
                too_long.append(f"{path.relative_to(ROOT)}: {lines} lines (limit {limit})")
    assert not too_long, "\n".join(too_long)


def test_every_package_is_in_the_wheel():
    """pyproject lists packages by hand (package-dir maps eval/ and plugins/ into trl_plus):
    a package folder missing from the list would work in an editable install and vanish
    from a wheel."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {folder: package for package, folder in setuptools["package-dir"].items()}
    found = set()
    for folder, package in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert sorted(found - set(setuptools["packages"])) == []
