"""The trl-plus evaluation harness: checkpoints judged against a reference (win rate with
bootstrap CI and a length-controlled win rate), KL to the reference policy, gold reward,
and lm-eval benchmarks, written to ``eval.json`` with a manifest.

In-process API (what the comparison report calls)::

    from trl_plus.eval import evaluate_checkpoint, generate, GenerationSettings
    results = evaluate_checkpoint("runs/dpo", "prompts.jsonl", reference="runs/sft",
                                  config={"judges": [{"name": "reward_model", "model": "runs/rm"}]},
                                  out_dir="runs/dpo/eval")
"""

from __future__ import annotations

_LAZY = {
    "evaluate_checkpoint": "harness",
    "compare_results": "harness",
    "generate": "generation",
    "GenerationSettings": "generation",
    "load_policy": "generation",
    "Policy": "generation",
    "load_prompts": "prompts",
    "PromptSet": "prompts",
    "estimate_kl": "kl",
    "run_lm_eval": "benchmarks",
    "offline_tasks": "benchmarks",
    "validate_eval_section": "config",
    "EvalSection": "config",
    "win_rate_summary": "stats",
    "paired_difference": "stats",
    "length_controlled_win_rate": "stats",
    "bootstrap_ci": "stats",
    "power_analysis": "stats",
    "power_by_seeds": "stats",
    "run_judge": "judging",
    "normalise_judge_spec": "judging",
    "compare_frontiers": "frontier",
    "rank_frontiers": "frontier_ranking",
    "holm": "multiplicity",
}

__all__ = sorted(_LAZY)


def _module(name: str):
    """The submodule ``name``, imported on first use: importing the package stays cheap, and
    every import is a plain statement an import graph sees."""
    if name == "harness":
        from . import harness as module
    elif name == "generation":
        from . import generation as module
    elif name == "prompts":
        from . import prompts as module
    elif name == "kl":
        from . import kl as module
    elif name == "benchmarks":
        from . import benchmarks as module
    elif name == "config":
        from . import config as module
    elif name == "stats":
        from . import stats as module
    elif name == "judging":
        from . import judging as module
    elif name == "frontier":
        from . import frontier as module
    elif name == "frontier_ranking":
        from . import frontier_ranking as module
    else:
        from . import multiplicity as module
    return module


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
