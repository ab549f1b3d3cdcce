"""A third-party plugin, built as a real distribution and pip-installed, as a user would."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PLUGIN = '''
import trl_plus

__version__ = "1.2.3"


class Shouting:
    """Reward: the fraction of upper-case letters in the completion."""

    def __init__(self, bonus: float = 1.0):
        self.bonus = bonus

    def __call__(self, prompts, completions, **columns):
        return [self.bonus * sum(c.isupper() for c in t) / max(len(t), 1) for t in completions]


@trl_plus.hookimpl
def trl_plus_register_reward_sources(register):
    register.add("shouting", Shouting)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "trl-plus-shouting"
version = "1.2.3"

[project.entry-points.trl_plus]
shouting = "trl_plus_shouting"

[tool.setuptools]
py-modules = ["trl_plus_shouting"]
'''


def run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "trl_plus", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    src = tmp_path_factory.mktemp("shouting")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "trl_plus_shouting.py").write_text(PLUGIN)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation", str(src)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    try:
        yield
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "--quiet", "trl-plus-shouting"], capture_output=True)


def test_listed_by_plugins_command(installed_plugin):
    result = run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["shouting"]["version"] == "1.2.3"
    assert rows["shouting"]["package"] == "trl-plus-shouting"
    assert rows["shouting"]["components"] == {"reward_sources": ["shouting"]}


def test_usable_by_name_in_a_recipe(installed_plugin, tmp_path):
    result = run("validate", "tiny-dpo", "--set", "rewards.0={name: shouting, bonus: 2.0}")
    assert result.returncode == 0, result.stderr
    script = textwrap.dedent("""
        from trl_plus.recipe import load_recipe
        from trl_plus.manager import Hooks
        hooks = Hooks()
        recipe = load_recipe("tiny-dpo", ["rewards.0={name: shouting, bonus: 2.0}"], hooks=hooks)
        mix = hooks.components().reward_mix([r.model_dump() for r in recipe.rewards])
        print(mix(["p", "p"], ["AB", "ab"]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[2.0, 0.0]"


def test_blocked_by_name(installed_plugin):
    env = {"TRL_PLUS_BLOCK_PLUGINS": "shouting"}
    result = run("plugins", "--json", env=env)
    assert "shouting" not in {r["name"] for r in json.loads(result.stdout)}
    result = run("validate", "tiny-dpo", "--set", "rewards.0.name=shouting", env=env)
    assert result.returncode == 2 and "unknown reward source 'shouting'" in result.stderr


def test_autoload_off(installed_plugin):
    result = run("plugins", "--json", env={"TRL_PLUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "shouting" not in {r["name"] for r in json.loads(result.stdout)}
