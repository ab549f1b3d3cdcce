"""One checkpoint, evaluated: generations, judged win rates against a reference, KL to the
reference policy, gold reward, lm-eval benchmarks; written to ``eval.json``.

Designed to be called in-process on many checkpoints (the comparison report does):
models are loaded once per call, generations are cached in ``generations.jsonl``, and
``evaluate_checkpoint`` returns the same dict it writes.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trl_plus.errors import DataError
from trl_plus.reward_checks import numeric_scores

from .checkpoints import load_policy
from .config import EvalSection, validate_eval_section
from .generation import sample_completions
from .generation_settings import GenerationSettings
from .kl import distributions_fit
from .judging import judge_failures, judge_label, normalise_judge_spec, public_spec, run_judge
from .prompts import load_prompts
from .sampling import sample_seed
from .stats import mean_with_ci, paired_difference, win_rate_summary

RESULTS_FILE = "eval.json"
CACHE_FILE = "generations.jsonl"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("trl-plus", "trl", "transformers", "torch", "lm_eval", "datasets", "peft"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _clean(obj):
    """JSON-safe: NaN and infinities become None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _name(x: Any) -> str | None:
    if x is None:
        return None
    if isinstance(x, (str, Path)):
        return str(x)
    return getattr(x, "source", None) or getattr(x, "model_id", None) or type(x).__name__


def evaluate_checkpoint(
    checkpoint: Any,
    prompts: Any,
    *,
    reference: Any = None,
    config: EvalSection | Mapping | None = None,
    out_dir: str | Path | None = None,
    hooks=None,
    tokenizer: Any = None,
    model_id: str | None = None,
    progress: bool = True,
    recipe_hash: str | None = None,
    kl_reference: Any = None,
) -> dict:
    """Evaluate ``checkpoint`` (path, hub id, ``tiny:`` name or in-memory model) on ``prompts``.

    :param prompts: a :func:`load_prompts` source or a :class:`PromptSet`.
    :param reference: a reference checkpoint whose generations the candidate is judged
        against (also the reference policy of the KL); ``None`` uses the prompt set's
        reference completions.
    :param kl_reference: the KL's reference policy when no completions are to be judged
        against it (no reference samples are drawn); ``config.kl.reference`` and then
        ``reference`` take its place when it is ``None``.
    :param config: the ``eval:`` section (judges, gold, tasks, generation, kl, ...).
        ``generation.seed`` is combined with each model's identity into the seed it
        samples with (:func:`~trl_plus.eval.sampling.sample_seed`; the candidate's,
        the reference's and the KL's extra samples are recorded in ``manifest.seeds``), so
        ``generate(checkpoint, prompts, settings, cache)`` returns the judged completions.
        When generation samples at temperature 1 with top-p 1 and the KL's length cap, the
        candidate's completions double as KL samples (``kl.reused_samples`` per prompt).
    :param out_dir: where ``eval.json`` and the generation cache go (nothing is written
        when ``None``, and nothing is cached unless ``config.cache`` is set).
    """
    from trl_plus.manager import Hooks

    hooks = Hooks.of(hooks)
    cfg = config if isinstance(config, EvalSection) else validate_eval_section(dict(config or {}), hooks)
    out_path = Path(out_dir) if out_dir is not None else None
    cache = cfg.cache or (str(out_path / CACHE_FILE) if out_path else None)
    pset = load_prompts(prompts, prompt_column=cfg.prompt_column, reference_column=cfg.reference_column,
                        max_prompts=cfg.max_prompts, hooks=hooks, drop_empty=cfg.drop_empty)
    if cfg.tasks:  # every lm-eval task's data can be loaded, before anything is generated or judged
        from .benchmarks import check_tasks

        check_tasks(cfg.tasks)
    gen = GenerationSettings(**cfg.generation.model_dump())
    boot = cfg.bootstrap
    results: dict[str, Any] = {
        "checkpoint": _name(checkpoint),
        "reference": _name(reference) if reference is not None else "reference completions",
        "prompts": {"source": pset.source, "count": len(pset), "sha256": pset.sha256,
                    **({"empty_dropped": pset.empty_dropped} if pset.empty_dropped else {})},
    }

    # -- generations (cached: a re-run or a new judge never samples again) --------------
    kl_ref = cfg.kl.reference or kl_reference or reference
    need_kl = cfg.kl.enabled and kl_ref is not None
    policy = ref_policy = None
    if need_kl or cfg.tasks or not isinstance(checkpoint, (str, Path)) or model_id is not None:
        policy = load_policy(checkpoint, tokenizer=tokenizer, hooks=hooks, model_id=model_id)
    if need_kl:
        ref_policy = load_policy(kl_ref, hooks=hooks)
    # Each model samples from its own seed (derived from its identity and gen.seed), so a
    # candidate near its reference does not replay the reference's completions; a
    # reference checkpoint samples from its "reference" stream, so a checkpoint judged
    # against itself is compared with independent samples.
    # The token KL estimator reuses the policy's next-token distributions along the judged
    # completions when those are KL samples (below) and the distributions fit in memory.
    kl_tokens = cfg.kl.max_new_tokens or gen.max_new_tokens
    keep = (need_kl and cfg.kl.estimator == "token" and kl_tokens == gen.max_new_tokens and policy is not None
            and distributions_fit(policy.model, policy.tokenizer, len(pset) * gen.num_samples, gen.max_new_tokens))
    drawn = sample_completions(policy or checkpoint, pset.prompts, gen, cache, hooks=hooks,
                               progress="generating (candidate)" if progress else False, keep_distributions=keep)
    candidate = drawn.texts
    seeds: dict[str, Any] = {"generation": gen.seed, "candidate": drawn.seed, "reference": None, "kl": None}
    n = gen.num_samples
    if reference is not None:
        same = ref_policy is not None and kl_ref is reference
        ref_drawn = sample_completions(ref_policy if same else reference, pset.prompts, gen, cache, hooks=hooks,
                                       stream="reference",
                                       progress="generating (reference)" if progress else False)
        ref_completions = ref_drawn.texts
        seeds["reference"] = ref_drawn.seed
    elif pset.references is not None:
        ref_completions = [r for r in pset.references for _ in range(n)]
    else:
        ref_completions = None
    prompt_rows = [p for p in pset.prompts for _ in range(n)]
    prompt_ids = [i for i in range(len(pset)) for _ in range(n)]
    results["generation"] = {**gen.to_dict(), "cache": cache}
    results["mean_length"] = sum(len(c) for c in candidate) / len(candidate)
    results["examples"] = [
        {"prompt": p, "completion": c, **({"reference": r} if ref_completions else {})}
        for p, c, r in zip(prompt_rows[:5], candidate[:5], (ref_completions or [None] * 5)[:5])
    ]

    # -- judges -------------------------------------------------------------------------
    results["win_rates"] = {}
    judge_specs = [normalise_judge_spec(s, hooks, f"eval.judges[{i}]") for i, s in enumerate(cfg.judges)]
    if judge_specs and ref_completions is None:
        raise DataError(
            "judges need a reference: give a reference checkpoint (--reference / eval.reference) or a prompt set "
            "with a reference completion column (eval.reference_column)"
        )
    components = hooks.components()
    for i, spec in enumerate(judge_specs):
        label = judge_label(spec)
        judge = components.judge(spec, f"eval.judges[{i}]")
        probs = run_judge(judge, label, prompt_rows, candidate, ref_completions,
                          batch_size=cfg.judge_batch_size, progress=progress)
        summary = win_rate_summary(
            probs, prompt_ids, [len(c) for c in candidate], [len(r) for r in ref_completions],
            n_resamples=boot.resamples, seed=boot.seed, confidence=boot.confidence,
        )
        summary["judge"] = public_spec(spec)
        summary.update(judge_failures(judge, label, probs))
        summary["probabilities"] = probs
        key = label if label not in results["win_rates"] else f"{label}#{i}"
        results["win_rates"][key] = summary

    # -- gold reward ----------------------------------------------------------------------
    # A completion the gold source could not score (None, or not a finite number) is left
    # out of every mean and counted in "failed"; a prompt with no score left is None in
    # per_prompt and counted in "missing".
    if cfg.gold is not None:
        source = components.reward_source(cfg.gold, "eval.gold")
        scores = _gold_scores(source, prompt_rows, candidate)
        gold = {"source": public_spec(cfg.gold if isinstance(cfg.gold, Mapping) else {"name": cfg.gold})}
        per_prompt_gold = per_prompt_means(scores, prompt_ids)
        gold.update(mean_with_ci(per_prompt_gold, n_resamples=boot.resamples, seed=boot.seed,
                                 confidence=boot.confidence))
        gold["per_prompt"] = per_prompt_gold  # for paired comparisons between checkpoints
        gold["failed"] = sum(s is None for s in scores)
        if ref_completions is not None:
            ref_scores = _gold_scores(source, prompt_rows, ref_completions)
            gold["reference"] = mean_with_ci(per_prompt_means(ref_scores, prompt_ids), n_resamples=boot.resamples,
                                             seed=boot.seed, confidence=boot.confidence)
            gold["reference"]["failed"] = sum(s is None for s in ref_scores)
        results["gold_reward"] = gold

    # -- KL to the reference policy ---------------------------------------------------
    if need_kl:
        from .kl import estimate_kl

        seeds["kl"] = sample_seed(policy.model_id, gen.seed, "kl")
        # The candidate's completions are already samples of the KL's distribution when
        # generation samples at temperature 1 with no top-p (never any top-k) and the same
        # length cap; their token ids are scored as they are, and only the shortfall
        # is drawn, from the policy's separate "kl" stream.
        reusable = (gen.temperature == 1.0 and gen.top_p == 1.0 and kl_tokens == gen.max_new_tokens
                    and drawn.token_ids is not None)

        def per_prompt(values):  # the judged completions' values, one list per prompt
            if not (reusable and values and len(values) == len(drawn.token_ids)):
                return None
            return [values[i * n:(i + 1) * n] for i in range(len(pset))]

        results["kl"] = estimate_kl(
            policy, ref_policy, pset.prompts, num_samples=cfg.kl.num_samples,
            max_new_tokens=kl_tokens, batch_size=gen.batch_size,
            seed=seeds["kl"], cache_path=cache, progress="sampling for KL" if progress else False,
            policy_samples=per_prompt(drawn.token_ids), policy_logprobs=per_prompt(drawn.logprobs),
            estimator=cfg.kl.estimator, policy_distributions=per_prompt(drawn.distributions),
        )
        drawn.distributions = None  # as large as the rest of the evaluation's tensors together
        results["kl"]["reference"] = _name(kl_ref)
        del ref_policy
    elif cfg.kl.enabled:
        results["kl"] = None  # no reference policy: only reference completions were given

    # -- lm-eval --------------------------------------------------------------------------
    if cfg.tasks:
        from .benchmarks import run_lm_eval

        target = policy.model if policy is not None else checkpoint
        if isinstance(target, (str, Path)):
            from trl_plus.tiny import resolve

            target = resolve(str(target))
        results["lm_eval"] = run_lm_eval(
            target, cfg.tasks, tokenizer=policy.tokenizer if policy is not None else None,
            batch_size=cfg.lm_eval.batch_size, limit=cfg.lm_eval.limit, num_fewshot=cfg.lm_eval.num_fewshot,
            seed=gen.seed,
        )

    results["manifest"] = {
        "versions": versions(),
        "checkpoint": _name(checkpoint),
        "reference": results["reference"],
        "kl_reference": _name(kl_ref),
        "judges": [public_spec(s) for s in judge_specs],
        "gold": public_spec(cfg.gold),
        "tasks": list(cfg.tasks),
        "seeds": {**seeds, "bootstrap": boot.seed, "lm_eval": gen.seed},
        "prompt_set": {"source": pset.source, "sha256": pset.sha256, "count": len(pset)},
        "recipe_hash": recipe_hash,
        "config": public_spec(cfg.model_dump()),
    }
    results = _clean(results)
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        (out_path / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    hooks.evaluation_done(results, str(out_path) if out_path is not None else None)
    return results


def _gold_scores(source, prompts: Sequence[str], completions: Sequence[str]) -> list[float | None]:
    """The gold source's score of each completion; ``None`` where it gave no usable one."""
    scores = numeric_scores("eval.gold", source(prompts, completions), len(completions))
    return [v if v is not None and math.isfinite(v) else None for v in scores]


def per_prompt_means(scores: Sequence[float | None], prompt_ids: Sequence[int]) -> list[float | None]:
    """Mean score per prompt (first-seen order), failed (None) scores left out; None for a
    prompt whose every score failed."""
    sums: dict[int, list[float]] = {}
    for s, i in zip(scores, prompt_ids):
        sums.setdefault(i, [])
        if s is not None:
            sums[i].append(float(s))
    return [sum(v) / len(v) if v else None for v in sums.values()]


def compare_results(a: Mapping, b: Mapping, *, judge: str | None = None, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Paired comparison of two ``eval.json`` results on the same prompts and reference:
    the win-rate difference (A minus B) with its bootstrap CI per judge, and lm-eval
    items compared one by one."""
    from .benchmarks import compare_samples

    if a["prompts"]["sha256"] != b["prompts"]["sha256"]:
        raise DataError("the two results were computed on different prompt sets; a paired comparison needs the same")
    out: dict[str, Any] = {"a": a.get("checkpoint"), "b": b.get("checkpoint"), "win_rate_difference": {}}
    for name in a.get("win_rates", {}):
        if (judge and name != judge) or name not in b.get("win_rates", {}):
            continue
        out["win_rate_difference"][name] = paired_difference(
            a["win_rates"][name]["per_prompt"], b["win_rates"][name]["per_prompt"], n_resamples=n_resamples, seed=seed
        )
    if a.get("lm_eval") and b.get("lm_eval"):
        out["lm_eval_items"] = compare_samples(a["lm_eval"]["samples"], b["lm_eval"]["samples"])
    return _clean(out)
