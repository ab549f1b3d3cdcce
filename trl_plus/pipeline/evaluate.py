"""The eval stage: every checkpoint of every run, judged the same way by ``trl_plus.eval``.

Same reference (the SFT model: the win-rate baseline and the KL's reference policy),
same held-out prompts, same gold reward as judge: never the reward model PPO optimised.
The held-out prompts come in two disjoint sets: *validation* prompts place the
checkpoints for the verdict's fits (their KL) and choose where a short seed is best (their
gold reward), *test* prompts give every reported number.

Per checkpoint (one step with its own marker, ``eval/<method>/<run>/step-N``, so an
interrupted eval resumes at the next checkpoint):

- on the test prompts: gold reward, win rate under the judges (every checkpoint: all of
  them enter the fits), the Monte-Carlo KL to the SFT model, and lm-eval on each
  run's last checkpoint and on the SFT model (the table's deltas are against it);
- on the validation prompts: the gold reward and the KL to the SFT model (``val/eval.json``),
  which place and choose for the verdict's fits independently of the test numbers;
- with a reward stage: the reward model's score of the same test completions
  (``proxy.json``), the proxy axis of the over-optimisation curve.

Each point's marker also records what training the checkpoint had cost (its
``compute.json``, read through ``layout.checkpoint_compute``): the x axis of the report's
gold reward against compute.

Then ``eval/best_of_n``: n completions per test prompt from the SFT model, the reward
model's favourite kept, judged by the same gold reward: the no-training baseline.
Generations are cached in one file shared by all steps, so nothing is sampled twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from ..components import REWARD_CORE_KEYS
from .layout import (BON_DIR, PROXY_FILE, TEST_PROMPTS, VAL_DIR, VAL_PROMPTS, checkpoint_compute, collect_points,
                     fingerprint, mean, read_jsonl, reward_model_spec, write_json)
from .plan import planned_points

BON_NS = (1, 2, 4, 8, 16)
# Bumped when best-of-n's numbers change meaning, so a resumed run recomputes them:
# 2 = KL with ties and duplicates counted, gold rank-weighted over all samples.
BON_ESTIMATOR = 2
PIPELINE_EVAL_KEYS = ("prompts", "val_prompts", "reference")  # the pipeline's own, not the harness'
VAL_SHARE = 3  # without a validation file, one distinct prompt string in three validates


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
        "kl": {"num_samples": 1, **(raw.get("kl") or {})},
        "cache": cache,
    }
    for key in PIPELINE_EVAL_KEYS:
        section.pop(key, None)
    return section


def validate(recipe, config, hooks) -> None:
    """Check the eval section as the eval stage will run it (at start-up, not after training)."""
    from ..eval import validate_eval_section

    validate_eval_section(eval_section(recipe, config), hooks)


def _split_by_hash(pset):
    """Validation and test sets from one prompt file, split by prompt *string* (a stable
    hash), so a prompt repeated in the file never lands on both sides."""
    from ..eval import PromptSet

    def is_val(p: str) -> bool:
        return hashlib.sha1(p.encode()).digest()[0] % VAL_SHARE == 0

    refs = pset.references
    val = [i for i, p in enumerate(pset.prompts) if is_val(p)]
    test = [i for i, p in enumerate(pset.prompts) if not is_val(p)]
    if not val or not test:
        from ..errors import DataError

        raise DataError(f"eval.prompts: {pset.source} has too few distinct prompts to split into validation and "
                        "test; give eval.val_prompts, or more prompts")
    pick = lambda idx, tag: PromptSet([pset.prompts[i] for i in idx], [refs[i] for i in idx] if refs else None,
                                      f"{pset.source} ({tag})")
    return pick(val, "validation"), pick(test, "test")


def prompt_sets(ctx):
    """(validation, test) prompt sets: the corpus' generated ones, the recipe's files, or
    the recipe's one file split by prompt string."""
    from ..eval import load_prompts

    raw = ctx.recipe.raw.get("eval") or {}
    column = raw.get("prompt_column", "prompt")
    load = lambda source: load_prompts(source, prompt_column=column, max_prompts=raw.get("max_prompts"),
                                       hooks=ctx.hooks, base_dir=ctx.recipe.base_dir,
                                       drop_empty=bool(raw.get("drop_empty")))
    if raw.get("prompts"):
        test = load(raw["prompts"])
        if raw.get("val_prompts"):
            return load(raw["val_prompts"]), test
        return _split_by_hash(test)
    return load(str(ctx.run.path("corpus", VAL_PROMPTS))), load(str(ctx.run.path("corpus", TEST_PROMPTS)))


def training_prompts(ctx) -> set[str]:
    """Every prompt a policy trained on (PPO's prompts and the pairs')."""
    seen: set[str] = set()
    for rel in (("corpus", "prompts.jsonl"), ("pairs", "prompts.jsonl")):
        path = ctx.run.path(*rel)
        if path.exists():
            seen.update(r["prompt"] for r in read_jsonl(path))
    return seen


def run_eval(ctx) -> Path:
    from ..eval import GenerationSettings, evaluate_checkpoint, generate, load_policy
    from ..eval.harness import per_prompt_means

    section = eval_section(ctx.recipe, ctx.config, str(ctx.run.path("eval", "generations.jsonl")))
    val, test = prompt_sets(ctx)
    upstream = dict(ctx.fingerprints)
    points = planned_points(ctx.run.path, ctx.runs)  # the SFT reference first
    components = ctx.hooks.components()
    proxy_spec = reward_model_spec(ctx.run.path("reward")) if ctx.config.stages.reward is not None else None
    settings = GenerationSettings(**{k: v for k, v in section["generation"].items()})
    inputs = ctx.inputs(section)  # the gold reward's and judges' model folders, files
    input_parts = [inputs] if inputs else []
    done_all = fingerprint("eval", section, val.sha256, test.sha256, proxy_spec, BON_NS, BON_ESTIMATOR, sorted(upstream.items()),
                           *input_parts)

    def point_fp(point: dict) -> str:
        up = upstream.get(point["run"]) if point["run"] != "sft" else upstream.get("sft")
        return fingerprint(f"eval/{point['id']}", section, val.sha256, test.sha256, proxy_spec, up, point["step"], *input_parts)

    if getattr(ctx, "plan", None) is not None:
        # every checkpoint (and best-of-n) this recipe evaluates: the report reads back these and no other
        ctx.plan.record_points({point["id"]: point_fp(point) for point in points})
        if proxy_spec is not None:
            ctx.plan.record(f"eval/{BON_DIR}", _bon_fp(settings, test, upstream, section, input_parts))
    if ctx.skip("eval", done_all, settings=section, upstream=upstream, inputs=inputs):
        return ctx.run.path("eval")
    proxy = components.reward_mix([proxy_spec]) if proxy_spec else None
    overlap = sorted(training_prompts(ctx) & (set(val.prompts) | set(test.prompts)))
    reference = None  # the SFT model, loaded once for the stage: every point's reference
    with ctx.bar("eval", len(points) + (1 if proxy else 0)) as bar, open(os.devnull, "w") as devnull:
        muted = lambda: contextlib.redirect_stderr(devnull)  # lm-eval's own bars
        for point in points:
            rel = f"eval/{point['id']}"
            fp = point_fp(point)
            if not ctx.run.is_done(rel, fp):
                cfg = dict(section)
                is_ref = point["method"] == "sft"
                if not point["final"]:
                    cfg.update(tasks=[])  # lm-eval: each run's last checkpoint (and SFT)
                if is_ref:  # the reference against itself: no judges, KL 0 by definition
                    cfg.update(judges=[], kl={**cfg["kl"], "enabled": False})
                with ctx.run.step(rel, fp) as (folder, info), muted():
                    # Each checkpoint is loaded once, for its test, validation and proxy passes.
                    reference = reference or load_policy(str(ctx.run.path("sft")), hooks=ctx.hooks)
                    policy = reference if is_ref else load_policy(point["path"], hooks=ctx.hooks)
                    result = evaluate_checkpoint(policy, test, reference=reference, config=cfg,
                                                 out_dir=str(folder), hooks=ctx.hooks, progress=False,
                                                 recipe_hash=ctx.recipe.hash)
                    # KL on the validation prompts too: it places the checkpoints for the verdict's
                    # fits, independently of the test completions that give the test KL and gold.
                    evaluate_checkpoint(policy, val, kl_reference=None if is_ref else reference,
                                        config={**cfg, "judges": [], "tasks": []},
                                        out_dir=str(folder / VAL_DIR), hooks=ctx.hooks, progress=False,
                                        recipe_hash=ctx.recipe.hash)
                    if proxy is not None:
                        completions = generate(policy, test.prompts, settings, section["cache"], hooks=ctx.hooks,
                                               progress=False)
                        n = settings.num_samples
                        scores = proxy([p for p in test.prompts for _ in range(n)], completions)
                        per_prompt = per_prompt_means(scores, [i for i in range(len(test)) for _ in range(n)])
                        write_json(folder / PROXY_FILE, {"source": "reward_model", "mean": mean(per_prompt),
                                                         "per_prompt": per_prompt})
                    kl = result.get("kl") or {}
                    # KL samples beyond those the judged completions supplied were generated anew
                    extra = max(0, kl.get("num_samples", 0) - kl.get("reused_samples", 0))
                    n_gen = len(test) * (settings.num_samples + extra) + len(val) * settings.num_samples
                    info.update(point=point, tokens=int(n_gen * (kl.get("mean_completion_tokens") or settings.max_new_tokens)),
                                compute=None if is_ref else checkpoint_compute(point["path"]))  # what training had cost
            bar.update(1)
        if proxy is not None:
            _best_of_n(ctx, test, settings, section, proxy, upstream, components, reference)
            bar.update(1)
    with ctx.run.step("eval/summary", done_all) as (folder, info):
        write_json(folder / "points.json", collect_points(ctx.run.root, getattr(ctx, "plan", None)))
        write_json(folder / "prompts.json", {"validation": {"count": len(val), "sha256": val.sha256, "source": val.source},
                                             "test": {"count": len(test), "sha256": test.sha256, "source": test.source},
                                             "shared_with_validation": len(set(val.prompts) & set(test.prompts)),
                                             "shared_with_training": len(overlap), "shared_examples": overlap[:5]})
    write_json(ctx.run.path("eval", "done.json"), {"fingerprint": done_all, **(ctx.run.settings.get("eval") or {})})
    return ctx.run.path("eval")


def _bon_fp(settings, test, upstream: dict, section: dict, extra: list = ()) -> str:
    bon_settings = settings.replace(num_samples=max(BON_NS), temperature=1.0, top_p=1.0)
    return fingerprint(f"eval/{BON_DIR}", bon_settings.to_dict(), test.sha256, upstream.get("sft"), upstream.get("reward"),
                       section["gold"], BON_ESTIMATOR, *extra)


def _best_of_n(ctx, test, settings, section, proxy, upstream, components, sft=None) -> None:
    """Best-of-n from the SFT model (``sft``: loaded already, or None) on the test prompts,
    selected by the reward model."""
    from ..eval import generate
    from .diagnostics import best_of_n

    n_max = max(BON_NS)
    bon_settings = settings.replace(num_samples=n_max, temperature=1.0, top_p=1.0)
    rel = f"eval/{BON_DIR}"
    inputs = ctx.inputs(section)
    fp = _bon_fp(settings, test, upstream, section, [inputs] if inputs else [])
    if ctx.run.is_done(rel, fp):
        return
    with ctx.run.step(rel, fp) as (folder, info):
        completions = generate(sft or str(ctx.run.path("sft")), test.prompts, bon_settings, section["cache"],
                               hooks=ctx.hooks, progress=False)
        prompts = [p for p in test.prompts for _ in range(n_max)]
        gold = list(components.reward_source(section["gold"], "eval.gold")(prompts, completions))
        scores = list(proxy(prompts, completions))
        rows = lambda xs: [xs[i:i + n_max] for i in range(0, len(xs), n_max)]
        # The texts make a duplicated completion one output (a tie), whatever its scores.
        result = best_of_n(rows(gold), rows(scores), ns=BON_NS, completions=rows(list(completions)))
        write_json(folder / "best_of_n.json", result)
        info.update(tokens=len(completions) * settings.max_new_tokens, samples=len(completions))
