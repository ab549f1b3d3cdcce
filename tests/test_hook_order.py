"""One plugin implements every hook; a real PPO run and an evaluation call them in order."""

import inspect

import trl_plus
from trl_plus import hookspecs
from trl_plus.recipe import load_recipe


class EveryHook:
    """Records each hook call; takes fewer arguments than some specs (allowed)."""

    def __init__(self):
        self.calls = []

    @trl_plus.hookimpl
    def trl_plus_register_reward_sources(self, register):
        self.calls.append("register_reward_sources")
        register.add("always_one", lambda: (lambda prompts, completions, **kw: [1.0] * len(completions)))

    @trl_plus.hookimpl
    def trl_plus_register_kl_schedules(self, register):
        self.calls.append("register_kl_schedules")

    @trl_plus.hookimpl
    def trl_plus_register_data_filters(self, register):
        self.calls.append("register_data_filters")

    @trl_plus.hookimpl
    def trl_plus_register_judges(self, register):
        self.calls.append("register_judges")
        register.add("first_wins", lambda: (lambda prompts, a, b: [1.0] * len(prompts)))

    @trl_plus.hookimpl
    def trl_plus_register_trainer_kinds(self, register):
        self.calls.append("register_trainer_kinds")

    @trl_plus.hookimpl
    def trl_plus_register_recipe_sections(self, register):
        self.calls.append("register_recipe_sections")

    @trl_plus.hookimpl
    def trl_plus_load_model(self, name_or_path, role):
        self.calls.append(f"load_model:{role}")  # returns None: the built-in loads it

    @trl_plus.hookimpl
    def trl_plus_load_dataset(self, spec):
        self.calls.append("load_dataset")

    @trl_plus.hookimpl
    def trl_plus_recipe_loaded(self, recipe):
        self.calls.append("recipe_loaded")

    @trl_plus.hookimpl
    def trl_plus_trainer_created(self, trainer, recipe):
        assert recipe is not None and trainer.recipe is recipe
        self.calls.append("trainer_created")

    @trl_plus.hookimpl
    def trl_plus_rollout_scored(self, step, prompts, completions, rewards):
        assert len(prompts) == len(completions) == len(rewards["reward"])
        self.calls.append("rollout_scored")

    @trl_plus.hookimpl
    def trl_plus_step_end(self, step, metrics):
        assert "kl_coef" in metrics
        self.calls.append("step_end")

    @trl_plus.hookimpl
    def trl_plus_evaluation_done(self, results, output_dir):
        assert "win_rate" in str(results)
        self.calls.append("evaluation_done")


def test_plugin_implements_every_hookspec():
    specs = {n for n in dir(hookspecs) if n.startswith("trl_plus_")}
    assert specs == {n for n in dir(EveryHook) if n.startswith("trl_plus_")}


def test_every_hook_fires_in_order(plugin_manager, register_plugin, tmp_path):
    from trl_plus.eval import evaluate_checkpoint
    from trl_plus.trainers.ppo import train_from_recipe

    plugin = EveryHook()
    register_plugin(plugin, name="every-hook")
    recipe = load_recipe(
        "tiny-ppo",
        ["ppo.max_steps=8", "ppo.logging_steps=2", "rewards.1={name: always_one, weight: 0.5}"],
        hooks=plugin_manager,
    )
    out = tmp_path / "ppo"
    train_from_recipe(recipe, str(out), hooks=plugin_manager)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "review : the movie was"}\n{"prompt": "review : the plot is"}\n')
    evaluate_checkpoint(
        str(out), str(prompts), reference="tiny:causal-lm", hooks=plugin_manager, out_dir=tmp_path / "eval",
        config={"judges": [{"name": "first_wins"}], "generation": {"max_new_tokens": 4}, "kl": {"enabled": False}},
        progress=False,
    )
    calls = plugin.calls
    # registries are built when a recipe is validated, before it counts as loaded
    assert calls.index("register_reward_sources") < calls.index("recipe_loaded")
    assert calls.index("register_kl_schedules") < calls.index("recipe_loaded")
    assert calls.index("register_data_filters") < calls.index("recipe_loaded")
    run = calls[calls.index("recipe_loaded"):]
    assert run.index("load_dataset") < run.index("trainer_created")
    assert run.index("load_model:policy") < run.index("trainer_created")
    first_rollout = run.index("rollout_scored")
    assert run.index("trainer_created") < first_rollout < run.index("step_end") < run.index("evaluation_done")
    assert run.count("rollout_scored") >= 2 and run.count("step_end") >= 2
    assert "register_judges" in calls and calls.index("register_judges") < calls.index("evaluation_done")
    assert calls[-1] == "evaluation_done"
    # no hook runs per sample: a handful of calls for an 8-step run
    assert len(calls) < 40
    assert all(inspect.isfunction(getattr(EveryHook, n)) for n in dir(EveryHook) if n.startswith("trl_plus_"))
