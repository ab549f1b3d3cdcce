"""The report's figures (matplotlib, Agg backend), each written as a PNG file."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

METHOD_COLOURS = {"ppo": "#d62728", "ppo_gt": "#ff7f0e", "dpo": "#1f77b4", "sft": "#333333"}
SEED_STYLES = ("-", "--", ":", "-.")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def frontier(points: list[dict], names: dict[str, str], path: Path, budget: float | None = None) -> Path:
    """Gold reward against KL to the SFT model: one line per run through its checkpoints,
    every line starting at the SFT model (KL 0); the DPO paper's Figure 2."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    ref = next((p for p in points if p["method"] == "sft"), None)
    runs = defaultdict(list)
    for p in points:
        if p["method"] != "sft":
            runs[p["run"]].append(p)
    seeds = sorted({p["seed"] for p in points if p["seed"] is not None})
    strengths = defaultdict(set)
    for p in points:
        if p["method"] != "sft":
            strengths[p["method"]].add(p["strength"])
    labelled = set()
    for run, pts in sorted(runs.items()):
        pts = sorted(pts, key=lambda p: p["step"])
        m = pts[0]["method"]
        xs = ([0.0] if ref else []) + [p["kl"] for p in pts]
        ys = ([ref["gold"]] if ref else []) + [p["gold"] for p in pts]
        err = ([0.0] if ref else []) + [_half_ci(p) for p in pts]
        style = SEED_STYLES[seeds.index(pts[0]["seed"]) % len(SEED_STYLES)] if pts[0]["seed"] in seeds else "-"
        many = len(strengths[m]) > 1
        label = f"{names.get(m, m)}" + (f" {pts[0]['strength_key']}={pts[0]['strength']:g}" if many else "")
        alpha = 0.55 + 0.45 * (sorted(strengths[m]).index(pts[0]["strength"]) + 1) / len(strengths[m])
        ax.errorbar(xs, ys, yerr=err, color=METHOD_COLOURS.get(m, "#555"), linestyle=style, marker="o", markersize=4,
                    capsize=2, linewidth=1.4, alpha=alpha, label=None if label in labelled else label)
        labelled.add(label)
        ax.annotate(f"s{pts[0]['seed']}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 2), fontsize=7,
                    color=METHOD_COLOURS.get(m, "#555"))
    if ref:
        ax.scatter([0], [ref["gold"]], marker="*", s=160, color=METHOD_COLOURS["sft"], zorder=5, label="SFT (reference)")
    if budget is not None and math.isfinite(budget):
        ax.axvline(budget, color="#888", linestyle=":", linewidth=1)
        ax.text(budget, ax.get_ylim()[0], f" KL budget {budget:.2f}", fontsize=7, color="#666", va="bottom")
    ax.set_xlabel("KL(policy || SFT), nats per completion (Monte-Carlo estimate)")
    ax.set_ylabel("mean gold reward (held-out judge)")
    ax.set_title("Reward vs KL frontier: one point per checkpoint, one line per run (line style = seed)")
    ax.grid(alpha=0.25)
    ax.legend(loc="best", fontsize=8, frameon=False)
    return _save(fig, path)


def _half_ci(p: dict) -> float:
    ci = p.get("gold_ci")
    if not ci or ci[0] is None or ci[1] is None:
        return 0.0
    return (ci[1] - ci[0]) / 2


def win_rates(rows: list[dict], path: Path) -> Path:
    """Win rate against the SFT model with 95% CI bars, and the length-controlled win rate."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 0.45 * len(rows) + 1.2))
    for i, r in enumerate(rows):
        colour = METHOD_COLOURS.get(r["method"], "#555")
        lo, hi = r["win_rate_ci"]
        ax.errorbar([r["win_rate"]], [i], xerr=[[r["win_rate"] - lo], [hi - r["win_rate"]]], fmt="o", color=colour,
                    capsize=3)
        if r.get("lc_win_rate") is not None:
            ax.scatter([r["lc_win_rate"]], [i - 0.22], marker="D", s=18, color=colour, alpha=0.5)
    ax.axvline(0.5, color="#888", linestyle=":", linewidth=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("win rate against the SFT model (ties count half)\ndot: win rate with 95% CI; diamond: length-controlled win rate", fontsize=8)
    ax.grid(axis="x", alpha=0.25)
    return _save(fig, path)


CURVE_KEYS = {
    "reward": ("reward", "rewards/margins"),
    "KL": ("kl", "objective/kl", "kl_proxy"),
    "loss": ("loss",),
    "beta / kl_coef": ("kl_coef", "beta"),
}


def training_curves(histories: dict[str, tuple[str, list[dict]]], path: Path) -> Path:
    """Reward, KL, loss and beta / kl_coef from each run's ``trainer_state.json``."""
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.0))
    for ax, (title, keys) in zip(axes, CURVE_KEYS.items()):
        drawn = set()
        for label, (method, log) in sorted(histories.items()):
            for key in keys:
                pts = [(e["step"], e[key]) for e in log if key in e and isinstance(e[key], (int, float))]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, color=METHOD_COLOURS.get(method, "#555"), alpha=0.8, linewidth=1.1,
                            label=f"{method}: {key}" if (method, key) not in drawn else None)
                    drawn.add((method, key))
                    break
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.25)
        if drawn:
            ax.legend(fontsize=7, frameon=False)
    return _save(fig, path)


def cost(rows: list[dict], path: Path) -> Path:
    """Wall time per stage (horizontal bars) with the peak memory written beside each."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 0.32 * len(rows) + 1.0))
    names = [r["stage"] for r in rows]
    ax.barh(range(len(rows)), [r["wall_time_s"] for r in rows], color="#7f7f7f")
    for i, r in enumerate(rows):
        ax.text(r["wall_time_s"], i, f"  {r['wall_time_s']:.0f}s, peak {r['peak_rss_mb']:.0f} MB", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    ax.set_xlim(0, max([r["wall_time_s"] for r in rows] + [1]) * 1.35)
    return _save(fig, path)
