"""What the report reads from the run folder: the evaluated points, the run's status,
the trainer logs, the stage markers (costs, KL controllers), the best-of-n file and the
preference pairs. Every file the report opens is opened here, and only the steps of the
recipe now being run are read (see ``_reads``)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..layout import (BON_DIR, DONE, HELDOUT_SCORES, Plan, collect_points, policy_dirs, read_json, read_jsonl,
                      run_status)


def _reads(root: Path):
    """Which steps of the run folder the report reads: with a ``plan.json``, those of the
    recipe now being run whose markers match it (see ``layout.Plan``); else every one."""
    plan = Plan.read(root)
    return (lambda rel: True) if plan is None else plan.current


def _status(root: Path) -> dict:
    """Whether the run finished, and what is missing or left out (``layout.run_status``)."""
    return run_status(root)


def _evaluated_points(root: Path) -> list[dict]:
    """Every evaluated point of this recipe's runs that has a gold reward."""
    return [p for p in collect_points(root) if p.get("gold") is not None]


def _report_config(root: Path) -> dict:
    """The report section the run folder's report was last rendered with."""
    return read_json(root / "report" / "report_config.json", {}) or {}


def _prompts(root: Path) -> dict | None:
    """The eval stage's account of its test prompts (``eval/summary/prompts.json``)."""
    return read_json(root / "eval" / "summary" / "prompts.json", None)


def _histories(root: Path) -> dict:
    out = {}
    reads = _reads(root)
    policies = set(policy_dirs(root))  # the pipeline's own stages' and the arms' run folders
    for state in sorted(root.glob("*/*/trainer_state.json")):
        method = state.parent.parent.name
        if method in policies and reads(f"{method}/{state.parent.name}"):
            out[f"{method}/{state.parent.name}"] = (method, read_json(state, {}).get("log_history", []))
    return out


def _kl_controllers(root: Path) -> list[str]:
    """One sentence per ``kl_targets`` run: the adaptive controller's horizon and how it was
    set (scaled to the run's samples, or the recipe's), and where its kl_coef ended."""
    lines = []
    reads = _reads(root)
    for marker in sorted(root.glob("*/*/" + DONE)):
        if not reads(f"{marker.parent.parent.name}/{marker.parent.name}"):
            continue
        ctl = read_json(marker, {}).get("kl_controller")
        if not isinstance(ctl, dict) or ctl.get("horizon") is None:
            continue
        how = (f"scaled to the run: {ctl.get('horizon_fraction')} x its {ctl.get('samples')} samples "
               f"({ctl.get('rollouts')} rollouts of {ctl.get('samples_per_rollout')})"
               if ctl.get("horizon_source") == "scaled" else "set in the recipe")
        final = ctl.get("final_kl_coef")
        lines.append(f"{marker.parent.parent.name}/{marker.parent.name}: adaptive KL controller, target {ctl.get('target')}, "
                     f"horizon {ctl['horizon']} samples ({how})"
                     + (f", kl_coef {ctl.get('init')} -> {final:.3g}" if isinstance(final, (int, float)) else "") + ".")
    return lines


def _cost_rows(root: Path) -> list[dict]:
    """Wall time, peak memory and tokens per stage (sweep runs and eval checkpoints summed)."""
    agg: dict[str, dict] = defaultdict(lambda: {"wall_time_s": 0.0, "peak_rss_mb": 0.0, "tokens": 0, "steps": 0})
    reads = _reads(root)
    for marker in root.rglob(DONE):
        rel = marker.parent.relative_to(root).parts
        if not rel or rel[0] == "report" or rel[-1] == "summary" or (len(rel) > 1 and rel[-1] == "val"):
            continue
        if not reads("/".join(rel)):  # a step of another recipe (a left-out run): not this run's cost
            continue
        info = read_json(marker, {})
        if "wall_time_s" not in info:
            continue
        stage = rel[0] if rel[0] in ("corpus", "sft", "pairs", "reward", "eval") else "/".join(rel[:2])
        row = agg[stage]
        row["wall_time_s"] += info.get("wall_time_s") or 0.0
        row["peak_rss_mb"] = max(row["peak_rss_mb"], info.get("peak_rss_mb") or 0.0)
        row["tokens"] += info.get("tokens") or 0
        row["steps"] += 1
    order = ["corpus", "sft", "pairs", "reward"]
    keys = sorted(agg, key=lambda k: (order.index(k) if k in order else (5 if k != "eval" else 9), k))
    return [{"stage": k, **agg[k]} for k in keys]


def _best_of_n(root: Path) -> dict | None:
    """``eval/best_of_n/best_of_n.json``. A file written before the ties-aware KL holds the
    formula log n - (n-1)/n as ``kl``: it is labelled the upper bound it is."""
    if not _reads(root)(f"eval/{BON_DIR}"):
        return None  # not this recipe's (no reward stage now, or made from an earlier SFT model)
    bon = read_json(root / "eval" / BON_DIR / "best_of_n.json", None)
    if bon and any("kl_upper_bound" not in q for q in bon.get("points", [])):
        for q in bon.get("points", []):
            q.setdefault("kl_upper_bound", q.get("kl"))
        bon["kl_method"] = ("the upper bound log n - (n-1)/n, not an estimate: this best-of-n file predates the "
                            "estimate that counts ties and duplicate completions (re-run the eval stage for it), so "
                            "best-of-n is drawn at or right of its true KL")
    return bon


def _preference_pairs(root: Path) -> tuple[list[dict], dict | None] | None:
    """The pairs stage's ``pairs.jsonl`` and the reward stage's held-out scores (None when
    the gold reward did not score them); None when this recipe has no pairs."""
    path = root / "pairs" / "pairs.jsonl"
    reads = _reads(root)
    if not path.exists() or not reads("pairs"):
        return None
    heldout = read_json(root / "reward" / HELDOUT_SCORES, None) if reads("reward") else None
    if heldout and not any(v is not None for v in heldout.get("gold_chosen", [])):
        heldout = None
    return read_jsonl(path), heldout
