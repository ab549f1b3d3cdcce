"""The plugin contract: registration hooks called through pluggy (plain and wrapper
implementations), the component protocols, and a KL schedule's state in checkpoints."""

import inspect
import json
import subprocess
import sys

import pytest

import trl_plus
from trl_plus import hookspecs
from trl_plus.errors import ComponentError, PluginError


def _added_by(registry) -> dict:
    return {info.name: info.plugin for info in registry}


# -- registration hooks go through pluggy ------------------------------------------------------


def test_plain_registration_hook_adds_under_its_plugin(plugin_manager, register_plugin):
    class Plain:
        @trl_plus.hookimpl
        def trl_plus_register_reward_sources(self, register):
            register.add("plain_source", lambda bonus=1.0: None)

    register_plugin(Plain(), name="plain-plugin")
    assert _added_by(plugin_manager.reward_sources)["plain_source"] == "plain-plugin"


def test_wrapper_registration_hook_runs_both_halves(plugin_manager, register_plugin):
    calls = []

    class Wrapping:
        @trl_plus.hookimpl(wrapper=True)
        def trl_plus_register_kl_schedules(self, register):
            calls.append("before")
            register.add("before_yield", lambda value=1.0: (lambda step, stats: value))
            result = yield
            calls.append("after")
            register.add("after_yield", lambda value=1.0: (lambda step, stats: value))
            return result

    register_plugin(Wrapping(), name="wrapping-plugin")
    added = _added_by(plugin_manager.kl_schedules)
    assert calls == ["before", "after"]
    assert added["before_yield"] == added["after_yield"] == "wrapping-plugin"
    assert added["adaptive"] == "trl_plus.plugins.kl.adaptive"  # the others still register


def test_old_style_hookwrapper_registration_runs_both_halves(plugin_manager, register_plugin):
    class OldStyle:
        @trl_plus.hookimpl(hookwrapper=True)
        def trl_plus_register_judges(self, register):
            register.add("judge_before", lambda: None)
            outcome = yield
            outcome.get_result()
            register.add("judge_after", lambda: None)

    register_plugin(OldStyle(), name="old-style")
    added = _added_by(plugin_manager.judges)
    assert added["judge_before"] == added["judge_after"] == "old-style"


def test_wrapper_raising_in_registration_is_named(plugin_manager, register_plugin):
    class Broken:
        @trl_plus.hookimpl(wrapper=True)
        def trl_plus_register_data_filters(self, register):
            yield
            raise RuntimeError("after the yield")

    register_plugin(Broken(), name="broken-wrapper")
    with pytest.raises(PluginError, match="'broken-wrapper' raised in trl_plus_register_data_filters.*after the yield"):
        plugin_manager.data_filters


def test_registration_order_follows_pluggy(plugin_manager, register_plugin):
    order = []

    def plugin(label, **opts):
        class P:
            @trl_plus.hookimpl(**opts)
            def trl_plus_register_reward_sources(self):
                order.append(label)

        return P()

    register_plugin(plugin("last", trylast=True), name="last")
    register_plugin(plugin("first", tryfirst=True), name="first")
    plugin_manager.reward_sources
    assert order.index("first") < order.index("last")


def test_registration_under_another_name_is_its_own_plugins(plugin_manager, register_plugin):
    """A registration implemented under another name (``specname``) runs once, alone, and
    what it adds is named for its own plugin: not run inside every other plugin's call."""
    calls = []

    class Renamed:
        @trl_plus.hookimpl(specname="trl_plus_register_reward_sources")
        def add_mine(self, register):
            calls.append(register.kind)
            register.add("renamed_source", lambda: None)

    register_plugin(Renamed(), name="renamed")
    sources = plugin_manager.reward_sources
    assert calls == ["reward source"]
    assert sources.get("renamed_source").plugin == "renamed"
    assert sources.get("python").plugin == "trl_plus.plugins.rewards.python_callable"


# -- the protocols ------------------------------------------------------------------------------


def test_protocols_are_exported_and_used_in_the_hookspecs():
    from trl_plus import protocols

    for name in ("RewardSource", "KLSchedule", "DataFilter", "Judge", "Register", "TrainerKind", "RecipeSection"):
        assert getattr(trl_plus, name) is getattr(protocols, name)
    annotation = {name: inspect.signature(getattr(hookspecs, name)).parameters["register"].annotation
                  for name in dir(hookspecs) if name.startswith("trl_plus_register_")}
    assert annotation["trl_plus_register_reward_sources"] == "Register[Callable[..., RewardSource]]"
    assert annotation["trl_plus_register_kl_schedules"] == "Register[Callable[..., KLSchedule]]"
    assert annotation["trl_plus_register_data_filters"] == "Register[Callable[..., DataFilter]]"
    assert annotation["trl_plus_register_judges"] == "Register[Callable[..., Judge]]"
    assert annotation["trl_plus_register_trainer_kinds"] == "Register[TrainerKind]"
    for name in dir(hookspecs):
        if name.startswith("trl_plus_"):
            params = inspect.signature(getattr(hookspecs, name)).parameters.values()
            assert all(p.annotation not in ("Any", inspect.Parameter.empty) for p in params), name


def test_hookspecs_and_protocols_are_leaves():
    code = ("import sys, trl_plus.hookspecs; "
            "print(sorted(m for m in sys.modules if m.startswith('trl_plus')))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout.replace("'", '"'))
    assert set(loaded) <= {"trl_plus", "trl_plus.errors", "trl_plus.version", "trl_plus.protocols",
                           "trl_plus.hookspecs", "trl_plus.redact"}, loaded


# -- a KL schedule's state ----------------------------------------------------------------------


def _schedule(plugin_manager, spec):
    return plugin_manager.components().kl_schedule(spec)


def test_adaptive_state_round_trips_through_a_checkpoint(plugin_manager):
    from trl_plus.trainers.common import restore_schedule, schedule_state

    ran = _schedule(plugin_manager, {"name": "adaptive", "init": 0.1, "target": 1.0, "horizon": 10})
    for step, samples in ((1, 0), (2, 8), (3, 16)):
        ran(step, {"kl": 3.0, "samples": samples})
    saved = json.loads(json.dumps(schedule_state(ran)))
    assert saved == ran.fn.state() and saved["value"] > 0.1

    resumed = _schedule(plugin_manager, {"name": "adaptive", "init": 0.1, "target": 1.0, "horizon": 10})
    restore_schedule(resumed, saved)
    assert resumed(4, {"kl": 3.0, "samples": 24}) == ran(4, {"kl": 3.0, "samples": 24})


def test_adaptive_reads_the_state_an_older_checkpoint_holds(plugin_manager):
    from trl_plus.trainers.common import restore_schedule

    old = {"value": 0.25, "target": 2.0, "horizon": 100.0, "_last_count": 40}  # the controller's __dict__
    schedule = _schedule(plugin_manager, {"name": "adaptive", "init": 0.05, "target": 2.0, "horizon": 100})
    restore_schedule(schedule, old)
    assert dict(vars(schedule.fn)) == old
    assert schedule(9, {"samples": 40}) == 0.25  # no new samples since the checkpoint: unchanged


def test_function_schedule_keeps_its_attributes_as_before(plugin_manager):
    from trl_plus.trainers.common import restore_schedule, schedule_state

    def stepped(step, stats):
        stepped.calls += 1
        return 0.1

    stepped.calls = 0
    schedule = plugin_manager.components().kl_schedule(stepped)
    schedule(1, {})
    schedule(2, {})
    assert schedule_state(schedule) == {"calls": 2}
    stepped.calls = 0
    restore_schedule(schedule, {"calls": 2})
    assert stepped.calls == 2


def test_schedule_state_that_is_no_json_is_named(plugin_manager):
    from trl_plus.trainers.common import schedule_state

    class Opaque:
        def __call__(self, step, stats):
            return 0.1

        def state(self):
            return {"handle": object()}

        def load_state(self, state):
            pass

    schedule = plugin_manager.components().kl_schedule(Opaque())
    with pytest.raises(ComponentError, match="KL schedule 'Opaque': state"):
        schedule_state(schedule)


# -- trl-plus plugins ---------------------------------------------------------------------------


def test_plugins_command_describes_trainer_kinds_and_sections(capsys):
    from trl_plus.cli import main
    from trl_plus.commands.plugins import _recipe_section_lines

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "trainer kinds: dpo, grpo, online_dpo, ppo, rloo" in out
    assert "dpo (trains on pairs): " in out and "ppo (trains on prompts): " in out
    section = trl_plus.RecipeSection("stages", standalone=True, claims=("eval",), description="the comparison pipeline")
    assert _recipe_section_lines(section) == [
        "stages: the comparison pipeline",
        "    runs a recipe on its own (no trainer, model or data needed); checks eval: too",
    ]
    assert _recipe_section_lines(trl_plus.RecipeSection("report")) == ["report:"]
