"""The report's figure of gold reward against training compute (FLOPs, log axis)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .plots import METHOD_COLOURS, _plt, _save

OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def _colour(method: str, methods: list[str]) -> str:
    """The method's colour in every figure of the report; one of a few others where none is set."""
    colour = METHOD_COLOURS.get(method)
    if colour:
        return colour
    others = [m for m in methods if not METHOD_COLOURS.get(m)]
    return OTHER_COLOURS[others.index(method) % len(OTHER_COLOURS)] if method in others else "#555"


def compute_frontier(points: list[dict], section: dict, names: dict[str, str], path: Path) -> Path:
    """Gold reward (test prompts) against the FLOPs each checkpoint's training had spent.

    Thin lines join each run's checkpoints; thick lines are each method's mean over seeds
    on the compared compute range (shaded), the curves the matched-compute sentence
    averages; the dashed line is the SFT model, where every run's compute starts.
    Checkpoints without a compute record are not drawn (the report names them).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    methods = list(dict.fromkeys(p["method"] for p in points if p["method"] != "sft"))
    runs = defaultdict(list)
    for p in points:
        c = p.get("compute")
        if p["method"] == "sft" or p.get("gold") is None or not isinstance(c, dict) or not c.get("complete", True):
            continue
        if isinstance(c.get("flops"), (int, float)) and c["flops"] > 0:
            runs[(p["method"], p["run"])].append((c["flops"], p["gold"]))
    labelled = set()
    for (method, run), pts in sorted(runs.items()):
        xs, ys = zip(*sorted(pts))
        label = f"{names.get(method, method)}: each run's checkpoints" if method not in labelled else None
        labelled.add(method)
        ax.plot(xs, ys, color=_colour(method, methods), marker="o", markersize=3.5, linewidth=0.9, alpha=0.45,
                label=label)
    grid, curves = section.get("grid"), section.get("curves") or {}
    if grid and curves:
        for method, curve in curves.items():
            ax.plot(grid, curve, color=_colour(method, methods), linewidth=3.0, alpha=0.9,
                    label=f"{names.get(method, method)}: mean over seeds (compared range)")
        lo, hi = section["range"]
        ax.axvspan(lo, hi, color="#999", alpha=0.12, linewidth=0)
        ax.text(lo, 1.0, f" compared: {lo:.2g}-{hi:.2g} FLOPs", transform=ax.get_xaxis_transform(), fontsize=7,
                color="#555", va="top")
    ref = next((p for p in points if p["method"] == "sft" and p.get("gold") is not None), None)
    if ref is not None:
        ax.axhline(ref["gold"], color=METHOD_COLOURS.get("sft", "#333"), linestyle="--", linewidth=1.0,
                   label="SFT (reference, 0 FLOPs)")
    if runs:
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no checkpoint has a compute record", transform=ax.transAxes, ha="center", color="#555")
    ax.set_xlabel("training compute, FLOPs (6 N per trained token + 2 N per generated token; log scale)")
    ax.set_ylabel("mean gold reward, test prompts")
    ax.set_title("Reward vs compute: every checkpoint at the FLOPs its training had spent")
    ax.grid(alpha=0.25, which="both")
    ax.legend(loc="best", fontsize=7, frameon=False)
    return _save(fig, path)
