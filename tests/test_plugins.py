"""The plugin system: registration, lookups, errors that name the plugin, blocking."""

import pytest

import trl_plus
from trl_plus.errors import PluginError, RecipeError, UnknownComponentError
from trl_plus.manager import BUILTIN_PLUGINS, Hooks, get_plugin_manager

EXPECTED = {
    "reward_sources": {"reward_model", "python", "http"},
    "kl_schedules": {"constant", "linear", "cosine", "adaptive"},
    "data_filters": {"length", "dedup", "distinct_pair", "min_reward_margin", "regex", "reward_range", "reward_variance"},
}


def test_builtins_register_every_component(plugin_manager):
    for kind, names in EXPECTED.items():
        assert names <= set(getattr(plugin_manager, kind).names()), kind


def test_plugin_manager_is_not_built_at_import():
    import trl_plus.manager as manager

    assert not any(isinstance(v, type(get_plugin_manager(autoload=False))) for v in vars(manager).values())


def test_duplicate_name_names_both_plugins(plugin_manager, register_plugin):
    class Mine:
        @trl_plus.hookimpl
        def trl_plus_register_kl_schedules(self, register):
            register.add("constant", lambda value: (lambda step, stats: value))

    register_plugin(Mine(), name="my-schedules")
    with pytest.raises(PluginError) as exc:
        plugin_manager.kl_schedules
    assert "my-schedules" in str(exc.value) and "trl_plus.plugins.kl.constant" in str(exc.value)


def test_unknown_name_lists_and_suggests(plugin_manager):
    with pytest.raises(UnknownComponentError) as exc:
        plugin_manager.kl_schedules.get("adaptiv", where="kl")
    msg = str(exc.value)
    assert msg.startswith("kl:") and "Did you mean: adaptive?" in msg and "constant" in msg


def test_plugin_raising_in_registration_is_named(plugin_manager, register_plugin):
    class Broken:
        @trl_plus.hookimpl
        def trl_plus_register_reward_sources(self, register):
            raise RuntimeError("boom")

    register_plugin(Broken(), name="broken-plugin")
    with pytest.raises(PluginError, match="broken-plugin.*boom"):
        plugin_manager.reward_sources


def test_plugin_raising_in_lifecycle_hook_is_named(plugin_manager, register_plugin):
    class Noisy:
        @trl_plus.hookimpl
        def trl_plus_step_end(self, trainer, step, metrics):
            raise ValueError("bad metrics")

    register_plugin(Noisy(), name="noisy")
    with pytest.raises(PluginError, match="'noisy' raised in trl_plus_step_end"):
        plugin_manager.step_end(trainer=None, step=1, metrics={})


def test_registering_a_plugin_for_one_test_rebuilds_the_registry(plugin_manager, register_plugin):
    assert "shouting" not in plugin_manager.reward_sources

    class Shouting:
        @trl_plus.hookimpl
        def trl_plus_register_reward_sources(self, register):
            register.add("shouting", lambda bonus=1.0: None)

    register_plugin(Shouting())
    assert "shouting" in plugin_manager.reward_sources


def test_invalid_registrations_are_rejected(plugin_manager, register_plugin):
    class BadName:
        @trl_plus.hookimpl
        def trl_plus_register_data_filters(self, register):
            register.add("Has Spaces", lambda: None)

    register_plugin(BadName(), name="bad-name")
    with pytest.raises(PluginError, match="invalid name 'Has Spaces'"):
        plugin_manager.data_filters


def test_misspelt_hook_fails_at_start_up(plugin_manager):
    class Typo:
        @trl_plus.hookimpl
        def trl_plus_register_reward_source(self, register):  # missing the final "s"
            pass

    plugin_manager.pm.register(Typo(), name="typo")
    with pytest.raises(Exception, match="unknown hook"):
        plugin_manager.pm.check_pending()
    plugin_manager.pm.unregister(name="typo")


def test_block_builtin_by_short_or_full_name():
    pm = get_plugin_manager(autoload=False, blocked=["rewards.http"])
    assert "http" not in Hooks(pm).reward_sources and "python" in Hooks(pm).reward_sources
    pm = get_plugin_manager(autoload=False, blocked=["trl_plus.plugins.kl.adaptive"])
    assert "adaptive" not in Hooks(pm).kl_schedules


def test_block_from_environment(monkeypatch):
    monkeypatch.setenv("TRL_PLUS_BLOCK_PLUGINS", "filters.regex, kl.constant")
    hooks = Hooks(get_plugin_manager(autoload=False))
    assert "regex" not in hooks.data_filters and "constant" not in hooks.kl_schedules
    assert "dedup" in hooks.data_filters


def test_unknown_keyword_is_a_recipe_error_naming_component(plugin_manager):
    with pytest.raises(RecipeError, match=r"filters\[0\]: data filter 'regex' has no keyword 'patern'.*Did you mean: pattern"):
        plugin_manager.data_filters.check_kwargs("regex", {"column": "prompt", "patern": "x"}, "filters[0]")
    with pytest.raises(RecipeError, match="needs 'value'"):
        plugin_manager.kl_schedules.check_kwargs("constant", {}, "kl")


def test_decision_hook_plugin_wins_over_builtin(plugin_manager, register_plugin, tiny_model_path):
    sentinel = object()

    class Loader:
        @trl_plus.hookimpl
        def trl_plus_load_model(self, name_or_path, role, init_kwargs):
            return sentinel if name_or_path == "special" else None

    register_plugin(Loader())
    assert plugin_manager.load_model("special", "policy") is sentinel
    model = plugin_manager.load_model(str(tiny_model_path), "reference")
    assert type(model).__name__ == "LlamaForCausalLM"
    critic = plugin_manager.load_model(str(tiny_model_path), "critic")
    assert critic.config.num_labels == 1


def test_decision_hook_load_dataset(plugin_manager, register_plugin, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    ds = plugin_manager.load_dataset({"path": str(path), "split": "train"})
    assert ds.column_names == ["prompt", "chosen", "rejected"]

    class FromMemory:
        @trl_plus.hookimpl
        def trl_plus_load_dataset(self, spec):
            from datasets import Dataset

            return Dataset.from_list([{"prompt": "x"}]) if spec["path"] == "memory" else None

    register_plugin(FromMemory())
    assert plugin_manager.load_dataset({"path": "memory"})[0] == {"prompt": "x"}


def test_describe_plugins_lists_every_builtin(plugin_manager):
    rows = {r["name"]: r for r in plugin_manager.describe_plugins()}
    assert set(BUILTIN_PLUGINS) <= set(rows)
    assert rows["trl_plus.plugins.kl.warmup"]["components"] == {"kl_schedules": ["cosine", "linear"]}
    assert rows["trl_plus.plugins.kl.warmup"]["version"] == trl_plus.__version__
