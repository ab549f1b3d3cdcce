"""``trl-plus eval CHECKPOINT``: win rate against a reference, KL, gold reward, lm-eval.

Settings come from flags, or from a recipe's ``eval:`` section (``--recipe``), flags
winning. A judge is given as ``NAME`` or ``NAME:key=value,key=value``; NAME is a judge or
any registered reward source.

Paths given as arguments (CHECKPOINT, ``--reference``, ``--prompts``, ``--out``,
``--cache``) resolve against the working directory; those in the recipe against its
folder. A checkpoint is a local folder when it exists or can only be a path (see
``trl_plus.loading.local_path``), else a hub id.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

from ..errors import RecipeError
from . import cli_path


def parse_component(text: str, flag: str) -> dict:
    """``name`` or ``name:key=value,key=value`` (values read as YAML scalars)."""
    name, _, rest = text.partition(":")
    spec: dict = {"name": name.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))) if rest else []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise RecipeError(f"expected NAME or NAME:key=value,..., got {text!r}", flag)
        try:
            spec[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            spec[key.strip()] = value
    return spec


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: win rate vs a reference, KL, gold reward, lm-eval")
    p.add_argument("checkpoint", help="checkpoint folder, hub id, tiny:causal-lm, or a folder with a PEFT adapter")
    p.add_argument("--reference", help="reference checkpoint (its generations are judged against; KL reference)")
    p.add_argument("--prompts", help="prompt set: a .jsonl file with a 'prompt' column, or a dataset id")
    p.add_argument("--prompt-column", help="column of prompts (default: prompt)")
    p.add_argument("--reference-column", help="column of reference completions in the prompt set")
    p.add_argument("--max-prompts", type=int, help="use the first N prompts")
    p.add_argument("--drop-empty", action="store_true",
                   help="drop empty or whitespace-only prompts (counted) instead of refusing the prompt set")
    p.add_argument("--judge", action="append", default=[], metavar="NAME[:k=v,...]",
                   help="a judge or a reward source name (repeatable)")
    p.add_argument("--gold", metavar="NAME[:k=v,...]", help="a reward source as gold reward")
    p.add_argument("--tasks", nargs="+", metavar="TASK",
                   help="lm-eval tasks; trl_plus_offline runs the shipped offline pack")
    p.add_argument("--lm-eval-limit", type=float, help="lm-eval: at most N items per task (a fraction if < 1)")
    p.add_argument("--out", help="output folder (default: CHECKPOINT/eval)")
    p.add_argument("--cache", help="generations cache file (default: OUT/generations.jsonl)")
    p.add_argument("--num-samples", type=int, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--batch-size", type=int, help="generation batch size")
    p.add_argument("--seed", type=int)
    p.add_argument("--kl-samples", type=int, help="policy samples per prompt for the KL estimate")
    p.add_argument("--kl-estimator", choices=["token", "sample"],
                   help="KL estimator: token (exact per-position KL summed along each sample; default) or "
                        "sample (each sample's log-ratio)")
    p.add_argument("--no-kl", action="store_true", help="skip the KL estimate")
    p.add_argument("--recipe", help="take settings from this recipe's eval: section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set eval.max_prompts=50")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _section_from_args(args, hooks) -> tuple[dict, object, str | None, Path | None]:
    from ..model_refs import resolve_model_ref

    section: dict = {}
    reference = None
    recipe_hash = None
    base_dir = None
    if args.recipe:
        from ..recipe import load_recipe

        recipe = load_recipe(args.recipe, args.overrides, hooks=hooks)
        section = dict(recipe.raw.get("eval") or {})
        recipe_hash, base_dir = recipe.hash, recipe.base_dir
        if "prompts" not in section:
            split = recipe.spec.data.eval or recipe.spec.data.train
            section["prompts"] = {k: v for k, v in split.model_dump().items() if v is not None and k != "columns"}
            if recipe.spec.data.drop_empty:  # the recipe's data, with its rule for empty rows
                section.setdefault("drop_empty", True)
        reference = section.pop("reference", None) or recipe.spec.model.name_or_path
    elif args.overrides:
        raise RecipeError("--set needs --recipe")
    flags = {
        "prompt_column": args.prompt_column,
        "reference_column": args.reference_column,
        "max_prompts": args.max_prompts,
        "cache": str(cli_path(args.cache)) if args.cache else None,
        "drop_empty": True if args.drop_empty else None,
    }
    section.update({k: v for k, v in flags.items() if v is not None})
    if args.prompts:
        from ..model_refs import local_path

        local = local_path(args.prompts, files=True)
        section["prompts"] = str(local) if local is not None else args.prompts
    if args.judge:
        section["judges"] = [parse_component(j, "--judge") for j in args.judge]
    if args.gold:
        section["gold"] = parse_component(args.gold, "--gold")
    if args.tasks:
        section["tasks"] = list(args.tasks)
    gen = dict(section.get("generation") or {})
    for key in ("num_samples", "max_new_tokens", "temperature", "top_p", "batch_size", "seed"):
        if getattr(args, key) is not None:
            gen[key] = getattr(args, key)
    if gen:
        section["generation"] = gen
    if args.lm_eval_limit is not None:
        limit = args.lm_eval_limit
        section["lm_eval"] = {**(section.get("lm_eval") or {}), "limit": int(limit) if limit >= 1 else limit}
    kl = dict(section.get("kl") or {})
    if args.kl_samples is not None:
        kl["num_samples"] = args.kl_samples
    if args.kl_estimator is not None:
        kl["estimator"] = args.kl_estimator
    if args.no_kl:
        kl["enabled"] = False
    if kl:
        section["kl"] = kl
    if args.reference:
        reference = args.reference
    if isinstance(reference, str):
        # a recipe's local reference is absolute already (resolved against its folder on loading)
        reference = resolve_model_ref(reference, "--reference" if args.reference else "eval.reference", probe_hub=True,
                                      check_folder=True)
    return section, reference, recipe_hash, base_dir


def run(args) -> int:
    from ..manager import Hooks

    if args.tasks:
        from ..eval.benchmarks import OFFLINE_PACK, offline_tasks

        if all(t == OFFLINE_PACK or t in offline_tasks() for t in args.tasks):
            # lm-eval offline: the flag must be set before datasets / huggingface_hub load.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    hooks = Hooks()
    section, reference, recipe_hash, base_dir = _section_from_args(args, hooks)
    from ..eval.harness import RESULTS_FILE, evaluate_checkpoint
    from ..eval.section import check_eval_section
    from ..model_refs import resolve_model_ref

    config = check_eval_section(section, hooks)  # judges and gold reward built too, before any model loads
    if config.prompts is None:
        raise RecipeError("no prompt set: give --prompts FILE or a recipe with eval.prompts", "eval.prompts")
    checkpoint = resolve_model_ref(args.checkpoint, "checkpoint", probe_hub=True, check_folder=True)
    if config.kl.enabled and isinstance(config.kl.reference, str):
        resolve_model_ref(config.kl.reference, "eval.kl.reference", probe_hub=True, check_folder=True)
    if args.out:
        out = cli_path(args.out)
    elif Path(checkpoint).is_dir():
        out = Path(checkpoint) / "eval"
    else:
        out = cli_path(Path("runs") / "eval" / args.checkpoint.replace(":", "-").replace("/", "--"))
    results = evaluate_checkpoint(
        checkpoint, config.prompts, reference=reference, config=config, out_dir=out, hooks=hooks,
        progress=not args.quiet, recipe_hash=recipe_hash,
    )
    print(summary_text(results))
    print(f"wrote {out / RESULTS_FILE}")
    return 0


def _ci(ci) -> str:
    return "[" + ", ".join("nan" if v is None else f"{v:.3f}" for v in ci) + "]"


def _num(value) -> str:
    """A number to three decimals; ``n/a`` for None (``eval.json`` holds NaN as null), NaN or a non-number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}"


def summary_text(results: dict) -> str:
    dropped = results["prompts"].get("empty_dropped")
    lines = [f"checkpoint {results['checkpoint']} vs {results['reference']} on {results['prompts']['count']} prompts"
             + (f" ({dropped} empty or whitespace-only prompts dropped)" if dropped else "")]
    for name, w in results.get("win_rates", {}).items():
        wr = "nan" if w["win_rate"] is None else f"{w['win_rate']:.3f}"
        lc = "nan" if w["lc_win_rate"] is None else f"{w['lc_win_rate']:.3f}"
        lines.append(
            f"  {name}: win rate {wr} {_ci(w['win_rate_ci'])}, LC {lc} {_ci(w['lc_win_rate_ci'])}; "
            f"W/T/L {w['wins']}/{w['ties']}/{w['losses']}, failed {w['failed']}"
        )
    kl = results.get("kl")
    if kl:
        lines.append(f"  KL to reference: {_num(kl.get('kl'))} ± {_num(kl.get('stderr'))} (s.e.; "
                     f"{kl.get('estimator', 'sample')} estimator, {kl.get('num_samples', 'n/a')} sample(s) per prompt)")
    gold = results.get("gold_reward")
    if gold and gold.get("mean") is not None:
        lines.append(f"  gold reward: {gold['mean']:.3f} {_ci(gold['ci'])}")
    for task, metrics in (results.get("lm_eval") or {}).get("results", {}).items():
        values = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float) and "stderr" not in k)
        lines.append(f"  {task}: {values}")
    return "\n".join(lines)
