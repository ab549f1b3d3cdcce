"""The policy stages: PPO (on the learned reward model), PPO-GT (on the gold reward), DPO
(on the pairs) and any other trainer kind as an arm (``arms``), each a sweep of KL
strengths x seeds (``plan.planned_runs``).

Every run is an ordinary trainer recipe, built here and trained by
``trl_plus.trainers.from_recipe.train_from_recipe`` (so a run can be repeated alone with
``trl-plus train <run>/recipe.yaml``); it saves ``stages.checkpoints`` checkpoints along
training, so one run traces a curve on the reward-vs-KL frontier. What a run's recipe holds follows
from what its trainer kind consumes (``TrainerKind.consumes``): pairs or prompts. An arm's
run starts from the defaults below that its kind's config class has, and its KL strength
goes to the field its kind names (``TrainerKind.kl_field``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ..checkpointing import last_checkpoint
from ..errors import RecipeError
from ..trainers.from_recipe import train_from_recipe
from .arms import stage_of
from .config import STAGE_KINDS
from .launch import train_launched
from .layout import fingerprint, read_jsonl, reward_model_spec, write_jsonl
from .plan import PolicyRun, trainer_kind, upstream_of

DPO_DEFAULTS = dict(
    learning_rate=1e-4, num_train_epochs=3, per_device_train_batch_size=32, max_length=64,
    lr_scheduler_type="constant", logging_steps=5, weight_decay=0.0,
)
# The adaptive controller's default horizon, as a fraction of a run's samples (``kl_horizon``).
HORIZON_FRACTION = 0.1
PPO_DEFAULTS = dict(
    learning_rate=3e-4, critic_learning_rate=1e-3, per_device_train_batch_size=32, num_generations=2,
    num_mini_batches=2, num_ppo_epochs=2, max_completion_length=24, max_steps=60, logging_steps=5,
    temperature=1.0, weight_decay=0.0,
)


def ppo_samples(args: dict, world_size: int = 1) -> dict:
    """How many samples (completions) a PPO run of these ``PPOConfig`` args generates.

    As trl's RLOO (and so trl-plus' PPO) schedules it: a rollout every
    ``steps_per_generation x num_iterations`` micro-batches, each of
    ``per_device_train_batch_size x world_size x steps_per_generation`` completions, where
    ``num_mini_batches`` sets ``steps_per_generation`` to ``num_mini_batches x
    gradient_accumulation_steps`` and ``num_ppo_epochs`` sets ``num_iterations``. Returns
    ``{"rollouts", "samples_per_rollout", "samples"}``.
    """
    ga = int(args.get("gradient_accumulation_steps") or 1)
    per_device = int(args["per_device_train_batch_size"])
    world_size = max(1, int(world_size))
    if args.get("num_mini_batches") is not None:
        per_generation = int(args["num_mini_batches"]) * ga
    elif args.get("steps_per_generation") is not None:
        per_generation = int(args["steps_per_generation"])
    elif args.get("generation_batch_size") is not None:
        per_generation = max(1, int(args["generation_batch_size"]) // (per_device * world_size))
    else:
        per_generation = ga
    iterations = int(args.get("num_ppo_epochs") or args.get("num_iterations") or 1)
    micro_batches = int(args["max_steps"]) * ga
    rollouts = math.ceil(micro_batches / (per_generation * iterations))
    per_rollout = per_device * world_size * per_generation
    return {"rollouts": rollouts, "samples_per_rollout": per_rollout, "samples": rollouts * per_rollout}


def kl_horizon(args: dict, fraction: float = HORIZON_FRACTION, world_size: int = 1,
               horizon: int | None = None) -> dict:
    """The adaptive controller's horizon for a PPO run of ``args`` (``PPOConfig`` fields).

    The controller (Ziegler et al. 2019) moves ``kl_coef`` by a factor ``1 + e x n / horizon``
    per rollout of ``n`` samples, ``e`` the KL error clipped to +-0.2: over a run of ``N``
    samples ``kl_coef`` can change by at most ``exp(+-0.2 N / horizon)``. A fixed horizon
    of 10,000 samples (as in the original, whose runs were far longer than that) against a
    pipeline run of 15 rollouts x 64 samples moves it by under 2%, so every run of a
    kl_targets sweep would train at nearly the same kl_coef. Scaled to the run,
    ``horizon = fraction x N`` (default a tenth: the run spans ten of the controller's time
    constants, room for ``kl_coef`` to move by a factor of up to ``exp(2)`` either way), but
    never below one rollout's samples, so one update changes ``kl_coef`` by at most 20%
    and can never flip its sign. A ``horizon`` given explicitly (the recipe's
    ``stages.<ppo>.horizon``) wins.

    Returns what the run's ``done.json`` records as ``kl_controller``: ``horizon`` (the
    effective value, in samples), ``horizon_source`` (``"recipe"`` or ``"scaled"``),
    ``horizon_fraction`` (None when the recipe's horizon was used), and the run's sample
    plan (``rollouts``, ``samples_per_rollout``, ``samples``, ``world_size``).
    """
    plan = {**ppo_samples(args, world_size), "world_size": max(1, int(world_size))}
    if horizon is not None:
        return {"horizon": int(horizon), "horizon_source": "recipe", "horizon_fraction": None, **plan}
    scaled = max(math.ceil(round(fraction * plan["samples"], 9)), plan["samples_per_rollout"])
    return {"horizon": int(scaled), "horizon_source": "scaled", "horizon_fraction": float(fraction), **plan}


def _world_size(config) -> int:
    """Processes a policy run trains on: 1 in the pipeline's own process, the launcher's
    ``num_processes`` (or its accelerate config's) under a launcher."""
    launcher = getattr(config, "launcher", None)
    if launcher is None:
        return 1
    if launcher.num_processes is not None:
        return int(launcher.num_processes)
    if launcher.accelerate_config:
        import yaml

        try:
            settings = yaml.safe_load(Path(launcher.accelerate_config).read_text()) or {}
        except (OSError, yaml.YAMLError):
            return 1
        try:
            return max(1, int(settings.get("num_processes") or 1))
        except (TypeError, ValueError):
            return 1
    return 1


def _save_every(total_steps: int, checkpoints: int) -> int:
    return max(1, math.ceil(total_steps / checkpoints))


def _config_fields(ctx, run: PolicyRun) -> set[str] | None:
    """The fields of an arm's config class; None for the pipeline's own stages (their
    defaults are their configs')."""
    if run.method in STAGE_KINDS:
        return None
    return {f.name for f in dataclasses.fields(trainer_kind(run.method, ctx.kinds).config_class)}


def _defaults(defaults: dict, fields: set[str] | None) -> dict:
    return dict(defaults) if fields is None else {k: v for k, v in defaults.items() if k in fields}


def _kl_field(run: PolicyRun) -> str:
    """The config field a run's KL strength goes to: an arm's sweep is named for it (its
    kind's ``kl_field``); the pipeline's PPO stages name theirs kl_coef, PPOConfig's ``beta``."""
    return "beta" if run.method in STAGE_KINDS else run.strength_key


def _dpo_recipe(ctx, run: PolicyRun) -> dict:
    """The trainer recipe of a run whose trainer consumes pairs: the pairs stage's
    preferences, the run's beta (an arm's KL strength)."""
    section = stage_of(ctx.config, run.method)
    prefs = ctx.run.path("pairs", "preferences.jsonl")
    if not prefs.exists():
        write_jsonl(prefs, ({k: r[k] for k in ("prompt", "chosen", "rejected")}
                            for r in read_jsonl(ctx.run.path("pairs", "pairs.jsonl"))))
    fields = _config_fields(ctx, run)
    args = {**_defaults(DPO_DEFAULTS, fields), **section.args}
    if args.get("max_steps", -1) > 0:
        steps = args["max_steps"]
    else:
        n = sum(1 for _ in open(prefs))
        per_step = args["per_device_train_batch_size"] * args.get("gradient_accumulation_steps", 1)
        steps = math.ceil(n / per_step) * math.ceil(args["num_train_epochs"])
    args.update({_kl_field(run): run.strength}, seed=run.seed, save_strategy="steps",
                save_steps=_save_every(steps, ctx.config.stages.checkpoints))
    # Reference log-probs depend on neither beta nor seed: every DPO run of the sweep, and
    # every re-run of compare, shares them (the key changes when the SFT model or pairs do).
    if fields is None or "ref_logps_cache" in fields:
        args.setdefault("ref_logps_cache", str(ctx.run.path(run.method, "ref_logps")))
    recipe = {"trainer": run.trainer, "model": {"name_or_path": str(ctx.run.path("sft"))},
              "data": {"train": {"path": str(prefs)}}, run.trainer: args}
    return _with_peft(recipe, section)


def _ppo_recipe(ctx, run: PolicyRun) -> dict:
    """The trainer recipe of a run whose trainer consumes prompts: the corpus' (or the
    pairs') prompts, scored by the learned reward model or the gold reward, at the run's
    kl_coef or KL target (an arm: its KL strength, on the learned reward model)."""
    section = stage_of(ctx.config, run.method)
    args = {**_defaults(PPO_DEFAULTS, _config_fields(ctx, run)), **section.args}
    if args.get("max_steps", -1) <= 0:
        who = "PPO" if run.method in STAGE_KINDS else run.method
        raise RecipeError(f"{who} runs need max_steps > 0 (fix step counts, not wall-clock)",
                          f"stages.{run.method}.args.max_steps")
    recipe = {
        "trainer": run.trainer,
        "model": {"name_or_path": str(ctx.run.path("sft"))},
        "data": {"train": {"path": str(_prompts_file(ctx))}},
        "rewards": [reward_model_spec(ctx.run.path("reward"))] if run.on_reward_model else list(ctx.config.gold),
    }
    if run.strength_key == "kl_target":
        args["beta"] = 0.05
        controller = kl_controller(ctx, run)
        recipe["kl"] = {"name": "adaptive", "init": 0.05, "target": run.strength, "horizon": controller["horizon"]}
    else:
        args[_kl_field(run)] = run.strength
    args.update(seed=run.seed, save_strategy="steps", save_steps=_save_every(args["max_steps"], ctx.config.stages.checkpoints))
    recipe[run.trainer] = args
    return _with_peft(recipe, section)


# How a run's trainer recipe is built, by what its trainer kind consumes.
RECIPE_BUILDERS = {"pairs": _dpo_recipe, "prompts": _ppo_recipe}


def run_recipe(ctx, run: PolicyRun) -> dict:
    """The trainer recipe (a plain dict, as ``trl-plus train`` reads it) of one policy run."""
    return RECIPE_BUILDERS[trainer_kind(run.method, ctx.kinds).consumes](ctx, run)


def kl_controller(ctx, run: PolicyRun) -> dict | None:
    """The adaptive KL controller of a ``kl_target`` run: its target and initial kl_coef,
    and the effective horizon with how it was set (``kl_horizon``); None for other runs.
    ``run_policy`` records it in the run's ``done.json`` under ``kl_controller``."""
    if run.strength_key != "kl_target":
        return None
    section = stage_of(ctx.config, run.method)
    args = {**PPO_DEFAULTS, **section.args}
    fraction = getattr(section, "horizon_fraction", HORIZON_FRACTION)
    plan = kl_horizon(args, fraction, _world_size(ctx.config), horizon=getattr(section, "horizon", None))
    return {"name": "adaptive", "target": run.strength, "init": 0.05, **plan}


def _with_peft(recipe: dict, section) -> dict:
    """The run's recipe with the stage's LoRA settings (``stages.<method>.peft``), if any."""
    peft = getattr(section, "peft", None)  # a stage section built by hand may lack the key
    if peft is not None:
        recipe["peft"] = peft.model_dump(exclude_defaults=True)
    return recipe


def _prompts_file(ctx) -> Path:
    corpus = ctx.run.path("corpus", "prompts.jsonl")
    return corpus if corpus.exists() else ctx.run.path("pairs", "prompts.jsonl")


def _check_trainer(ctx, run: PolicyRun) -> None:
    """The run's trainer kind can be imported (before its folder is touched)."""
    kind = trainer_kind(run.method, ctx.kinds)
    try:
        kind.load()
    except ImportError as exc:
        raise RecipeError(f"the {kind.name} trainer is not available ({exc}); remove stages.{run.method}",
                          f"stages.{run.method}") from None


def run_policy(ctx, run: PolicyRun) -> Path:
    from ..recipe import validate_dict

    raw = run_recipe(ctx, run)
    names = upstream_of(run)
    upstream = [ctx.fingerprints.get(k) for k in names]
    inputs = ctx.inputs(raw)  # files outside the run folder (PPO-GT's gold reward model)
    fp = fingerprint(run.rel, raw, upstream, *([inputs] if inputs else []))
    # the run's marker records its whole trainer recipe: a re-run names the key that changed
    if ctx.skip(run.rel, fp, settings=raw, upstream=dict(zip(names, upstream)), inputs=inputs):
        return ctx.run.path(run.rel)
    recipe = validate_dict(raw, ctx.hooks, source=None)
    _check_trainer(ctx, run)
    with ctx.run.step(run.rel, fp, keep_partial=True) as (folder, info):
        # An interrupted run keeps its checkpoints and continues from the last complete one;
        # the folder is this step's own (rundir wiped it or kept it), so a fresh start may overwrite it.
        resume = last_checkpoint(folder)
        if ctx.config.launcher is not None:  # on every GPU: a subprocess per run
            state = train_launched(ctx, raw, folder, resume, run.label)
        else:
            with ctx.trainer_bar(run.label):
                state = train_from_recipe(recipe, str(folder), hooks=ctx.hooks, resume_from_checkpoint=resume,
                                          overwrite=resume is None).state
        info.update(global_step=state.global_step, tokens=_tokens_seen(state), **run.marker)
        if (controller := kl_controller(ctx, run)) is not None:
            # the effective horizon (and where kl_coef ended), for the report
            info["kl_controller"] = {**controller, "final_kl_coef": _last_logged(state, "kl_coef")}
    return folder


def _last_logged(state, key: str) -> float | None:
    for entry in reversed(getattr(state, "log_history", None) or []):
        if key in entry:
            return float(entry[key])
    return None


def _tokens_seen(state) -> int | None:
    for entry in reversed(state.log_history):
        for key in ("num_tokens", "num_input_tokens_seen"):
            if key in entry:
                return int(entry[key])
    seen = getattr(state, "num_input_tokens_seen", 0)
    return int(seen) or None
