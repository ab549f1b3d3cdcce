"""The eval stage: every checkpoint of every run, judged the same way by ``trl_plus.eval``.

Same reference (the SFT model: the win-rate baseline and the KL's reference policy),
same held-out prompts, same gold reward as judge: never the reward model PPO optimised.
Each checkpoint is one step with its own marker (``eval/<method>/<run>/step-N``), so an
interrupted eval resumes at the next checkpoint; generations are cached in one file
shared by all checkpoints, so the reference is sampled once. Every checkpoint gets KL and
gold reward (the frontier); win rates and lm-eval run on each run's last checkpoint (and
lm-eval on the SFT model: the table's deltas are against it).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..components import REWARD_CORE_KEYS
from .policy import checkpoints_of, planned_runs
from .rundir import fingerprint, read_json, write_json

SAMPLES_FILE = "gold_samples.json"


def gold_spec(config) -> dict:
    """The gold reward source as a plain spec (the combining keys stripped)."""
    spec = dict(config.gold[0])
    return {k: v for k, v in spec.items() if k not in REWARD_CORE_KEYS}


def eval_section(recipe, config, cache: str | None = None) -> dict:
    """The recipe's ``eval:`` with the pipeline's fixed choices filled in."""
    raw = dict(recipe.raw.get("eval") or {})
    gold = gold_spec(config)
    section = {
        "judges": [{"name": "reward_source", "source": gold}],
        "gold": gold,
        **raw,
        "generation": {"max_new_tokens": 24, "temperature": 1.0, "batch_size": 128, "seed": 0, **(raw.get("generation") or {})},
        "kl": {"num_samples": 2, **(raw.get("kl") or {})},
        "cache": cache,
    }
    section.pop("prompts", None)
    section.pop("reference", None)
    return section


def validate(recipe, config, hooks) -> None:
    """Check the eval section as the eval stage will run it (at start-up, not after training)."""
    from ..eval import validate_eval_section

    validate_eval_section(eval_section(recipe, config), hooks)


def _prompts(ctx):
    from ..eval import load_prompts

    raw = ctx.recipe.raw.get("eval") or {}
    source = raw.get("prompts") or str(ctx.run.path("corpus", "eval_prompts.jsonl"))
    return load_prompts(source, hooks=ctx.hooks, base_dir=ctx.recipe.base_dir)


def planned_points(ctx) -> list[dict]:
    """Every (run, checkpoint) to evaluate, the SFT reference first."""
    points = [{"id": "sft", "method": "sft", "seed": None, "strength": 0.0, "strength_key": None,
               "step": 0, "path": str(ctx.run.path("sft")), "final": True, "run": "sft"}]
    for run in planned_runs(ctx.config):
        ckpts = checkpoints_of(ctx.run.path(run.rel))
        for i, (step, path) in enumerate(ckpts):
            points.append({"id": f"{run.rel}/step-{step}", "method": run.method, "seed": run.seed, "run": run.rel,
                           "strength": run.strength, "strength_key": run.strength_key, "step": step,
                           "path": str(path), "final": i == len(ckpts) - 1})
    return points


def run_eval(ctx) -> Path:
    from ..eval import GenerationSettings, evaluate_checkpoint, generate

    section = eval_section(ctx.recipe, ctx.config, str(ctx.run.path("eval", "generations.jsonl")))
    prompts = _prompts(ctx)
    upstream = dict(ctx.fingerprints)
    points = planned_points(ctx)
    source = ctx.hooks.components().reward_source(section["gold"], "eval.gold")
    settings = GenerationSettings(**{k: v for k, v in section["generation"].items()})
    done_all = fingerprint("eval", section, prompts.sha256, sorted(upstream.items()))
    if ctx.skip("eval", done_all):
        return ctx.run.path("eval")
    with ctx.bar("eval", len(points)) as bar:
        for point in points:
            rel = f"eval/{point['id']}"
            up = upstream.get(point["run"]) if point["run"] != "sft" else upstream.get("sft")
            fp = fingerprint(rel, section, prompts.sha256, up, point["step"])
            if not ctx.run.is_done(rel, fp):
                cfg = dict(section)
                is_ref = point["method"] == "sft"
                if not point["final"]:
                    # Intermediate checkpoints give the frontier (KL, gold reward); judges
                    # (win rates with their length-controlled bootstrap) and lm-eval run on
                    # each run's last checkpoint, where the report shows them.
                    cfg.update(tasks=[], judges=[])
                if is_ref:  # the reference against itself: no judges, KL 0 by definition
                    cfg.update(judges=[], kl={**cfg["kl"], "enabled": False})
                with ctx.run.step(rel, fp) as (folder, info):
                    with open(os.devnull, "w") as mute, contextlib.redirect_stderr(mute):  # lm-eval's bars
                        result = evaluate_checkpoint(point["path"], prompts, reference=str(ctx.run.path("sft")), config=cfg,
                                                     out_dir=str(folder), hooks=ctx.hooks, progress=False,
                                                     recipe_hash=ctx.recipe.hash)
                    completions = generate(point["path"], prompts.prompts, settings, section["cache"], hooks=ctx.hooks,
                                           progress=False)
                    n = settings.num_samples
                    scores = list(source([p for p in prompts.prompts for _ in range(n)], completions))
                    per_prompt = [sum(s for s in scores[i * n:(i + 1) * n] if s is not None) / n for i in range(len(prompts))]
                    write_json(folder / SAMPLES_FILE, per_prompt)
                    kl = result.get("kl") or {}
                    info.update(point=point, tokens=int(len(prompts) * n * (1 + kl.get("num_samples", 0))
                                                      * (kl.get("mean_completion_tokens") or settings.max_new_tokens)))
            bar.update(1)
    with ctx.run.step("eval/summary", done_all) as (folder, info):
        write_json(folder / "points.json", collect_points(ctx.run.root))
    write_json(ctx.run.path("eval", "done.json"), {"fingerprint": done_all})
    return ctx.run.path("eval")


def collect_points(root: Path) -> list[dict]:
    """Every evaluated checkpoint under ``root/eval`` as one flat record (for the report)."""
    points = []
    for marker in sorted(Path(root, "eval").rglob("done.json")):
        info = read_json(marker, {})
        point = info.get("point")
        if not point:
            continue
        result = read_json(marker.parent / "eval.json", {})
        samples = read_json(marker.parent / SAMPLES_FILE, [])
        gold = result.get("gold_reward") or {}
        kl = result.get("kl") or {}
        win = next(iter((result.get("win_rates") or {}).values()), None)
        points.append({
            **point,
            "kl": float(kl.get("kl") or 0.0) if point["method"] != "sft" else 0.0,
            "kl_stderr": kl.get("stderr") or 0.0,
            "gold": gold.get("mean"),
            "gold_ci": gold.get("ci"),
            "gold_stderr": gold.get("stderr"),
            "gold_samples": samples,
            "win_rate": None if win is None else {k: win.get(k) for k in (
                "win_rate", "win_rate_ci", "lc_win_rate", "lc_win_rate_ci", "wins", "ties", "losses", "judged")},
            "per_prompt_win": None if win is None else win.get("per_prompt"),
            "lm_eval": result.get("lm_eval"),
            "eval_json": str(marker.parent / "eval.json"),
            "examples": result.get("examples", [])[:3],
            "wall_time_s": info.get("wall_time_s"),
        })
    return points
