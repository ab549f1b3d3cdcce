"""The README's examples work as written: its ten-line recipe validates, its twelve-line
plugin registers and scores, and the trainer-kind example of docs/plugins.md registers."""

import importlib.util
import inspect
import re
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

from trl_plus.cli import main
from trl_plus.errors import RecipeError
from trl_plus.protocols import RewardSource

ROOT = Path(__file__).resolve().parents[1]
PREFS = ROOT / "recipes" / "data" / "tiny_prefs.jsonl"


def code_block(page: Path, language: str, first_line: str) -> str:
    """The block of ``language`` on ``page`` whose first line starts with ``first_line``."""
    for block in re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), re.S | re.M):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"{page.name} has no {language} block starting {first_line!r}")


def import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_recipe_is_ten_lines_and_validates(tmp_path, capsys):
    recipe = code_block(ROOT / "README.md", "yaml", "# my-dpo.yaml")
    assert len(recipe.splitlines()) == 10
    (tmp_path / "my-dpo.yaml").write_text(recipe)
    (tmp_path / "data").mkdir()
    shutil.copy(PREFS, tmp_path / "data" / "prefs.jsonl")
    assert main(["validate", str(tmp_path / "my-dpo.yaml")]) == 0, capsys.readouterr().err
    assert "ok (trainer: dpo" in capsys.readouterr().out


def test_the_readme_plugin_is_twelve_lines_and_works(tmp_path, plugin_manager, register_plugin):
    source = code_block(ROOT / "README.md", "python", "# my_package/plugin.py")
    assert len(source.splitlines()) == 12
    assert source in (ROOT / "docs" / "plugins.md").read_text(), "docs/plugins.md shows the README's plugin"
    entry_points = tomllib.loads(code_block(ROOT / "README.md", "toml", "# my_package"))
    assert entry_points["project"]["entry-points"]["trl_plus"] == {"shouting": "my_package.plugin"}

    (tmp_path / "readme_plugin.py").write_text(source)
    plugin = import_file(tmp_path / "readme_plugin.py", "readme_plugin")
    # written against trl_plus.protocols.RewardSource: the same call, parameter for parameter
    wanted = list(inspect.signature(RewardSource.__call__).parameters)[1:]
    assert list(inspect.signature(plugin.Shouting.__call__).parameters)[1:] == wanted

    register_plugin(plugin)
    shouting = plugin_manager.components().reward_source({"name": "shouting", "bonus": 2.0})
    assert shouting(["p", "p"], ["AB", "ab"]) == [2.0, 0.0]
    with pytest.raises(RecipeError, match=r"bonus.*expected a number, got '2'"):
        plugin_manager.components().reward_source({"name": "shouting", "bonus": "2"})


def test_the_trainer_kind_example_registers(tmp_path, plugin_manager, register_plugin):
    source = code_block(ROOT / "docs" / "plugins.md", "python", "# a trainer kind")
    (tmp_path / "kind_plugin.py").write_text(source)
    plugin = import_file(tmp_path / "kind_plugin.py", "kind_plugin")
    register_plugin(plugin)
    kind = plugin_manager.trainer_kinds["my_rloo"]
    assert kind.consumes == "prompts" and kind.columns == ("prompt",)
    assert {"dpo", "ppo"} <= set(plugin_manager.trainer_kinds)
    assert "my_package" not in sys.modules  # the classes load on first use, not at registration


def test_the_architecture_page_lists_every_builtin_plugin(plugin_manager):
    """docs/architecture.md's table of built-in plugins is what `trl-plus plugins` shows."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    table = page.split("## Built-in plugins", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(trl_plus\.[\w.]+?)(\.\*)?` \|", table, re.M)
    shown = [row["name"] for row in plugin_manager.describe_plugins()]

    def covers(entry, name):
        module, wildcard = entry
        return name.startswith(module + ".") if wildcard else name == module

    assert [n for n in shown if not any(covers(e, n) for e in listed)] == [], "plugins the page does not list"
    assert [e[0] for e in listed if not any(covers(e, n) for n in shown)] == [], "the page lists plugins that do not exist"
    assert {"dpo", "ppo"} <= set(plugin_manager.trainer_kinds)
    assert {"stages", "gold", "report", "eval"} <= set(plugin_manager.recipe_sections)
