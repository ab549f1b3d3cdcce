"""Pytest fixtures for plugin authors (and for trl-plus itself).

Installed as a pytest plugin (entry point ``pytest11``), so these fixtures are available
in any test suite once trl-plus is installed:

- ``plugin_manager``: a fresh :class:`trl_plus.Hooks` with entry-point autoload off;
- ``register_plugin``: ``register_plugin(obj, name=None)`` registers a plugin on that
  manager for one test and unregisters it afterwards;
- ``tiny_tokenizer``, ``tiny_model_path``, ``tiny_causal_lm``, ``tiny_reward_model_path``,
  ``tiny_reward_model``: models and a tokenizer built from scratch offline in seconds
  (saved under a temporary folder, so they also load by path);
- ``tiny_preference_dataset``: a small learnable preference dataset.

Nothing heavy is imported until a fixture is used. Set ``HF_HUB_OFFLINE=1`` in your
``conftest.py`` before anything imports ``datasets`` or ``transformers``.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest


@pytest.fixture
def plugin_manager():
    from .manager import Hooks, get_plugin_manager

    return Hooks(get_plugin_manager(autoload=False, blocked=[]))


@pytest.fixture
def register_plugin(plugin_manager):
    registered = []

    def register(plugin, name: str | None = None):
        name = plugin_manager.pm.register(plugin, name=name)
        registered.append(plugin)
        plugin_manager.pm.check_pending()
        return name

    yield register
    for plugin in registered:
        if plugin_manager.pm.is_registered(plugin):
            plugin_manager.pm.unregister(plugin)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    from .tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-causal-lm"), "causal-lm", seed=0)


@pytest.fixture(scope="session")
def tiny_reward_model_path(tmp_path_factory):
    from .tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-reward-model"), "reward-model", seed=1)


@pytest.fixture
def tiny_tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture
def tiny_causal_lm(tiny_model_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_path)


@pytest.fixture
def tiny_reward_model(tiny_reward_model_path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_path, num_labels=1)


def preference_rows() -> list[dict]:
    """The rows of the shipped toy preference set (positive chosen, negative rejected)."""
    text = resources.files("trl_plus.recipes").joinpath("data/tiny_prefs.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def tiny_preference_dataset():
    from datasets import Dataset

    return Dataset.from_list(preference_rows())
