"""The report's figures (matplotlib, Agg backend), each written as a PNG file."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

# Colours for the arms beyond the pipeline's own (trainer kinds named in stages:), in order.
ARM_PALETTE = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#7b4173", "#637939", "#843c39",
               "#7f7f7f")


class MethodColours(dict):
    """Each method's colour: the pipeline's own fixed ones, and for any other arm the next
    colour of ``ARM_PALETTE`` (``assign`` gives a report's arms theirs in its order, so every
    figure of the report draws an arm alike); ``.get(method, default)`` and ``[method]``
    both answer for any method."""

    def __init__(self, fixed: dict[str, str]):
        super().__init__(fixed)
        self.fixed = dict(fixed)

    def assign(self, methods) -> None:
        for key in [k for k in self if k not in self.fixed]:
            del self[key]
        for method in methods:
            self[method]

    def __missing__(self, method: str) -> str:
        colour = ARM_PALETTE[(len(self) - len(self.fixed)) % len(ARM_PALETTE)]
        self[method] = colour
        return colour

    def get(self, method, default=None):
        return self[method] if isinstance(method, str) else default


METHOD_COLOURS = MethodColours({"ppo": "#d62728", "ppo_gt": "#ff7f0e", "dpo": "#1f77b4", "sft": "#333333",
                                "best_of_n": "#2ca02c"})
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


def frontier(points: list[dict], names: dict[str, str], path: Path, comparison: dict | None = None,
             best_of_n: dict | None = None) -> Path:
    """Gold reward (test prompts) against KL to the SFT model, the DPO paper's Figure 2.

    Every checkpoint is a faint marker; each seed's fitted curve (``compare_frontiers``'
    ``fits``) a thin line from the SFT star to its last checkpoint; each method's mean
    curve over the compared KL range (shaded) a thick line: the curves the verdict
    averages, so the plot shows what the verdict says. Best-of-n from the SFT model, the
    no-training baseline, is the green line.
    """
    plt = _plt()
    # more than two arms: a wider figure, the legend beside the axes
    wide = len({p["method"] for p in points if p["method"] != "sft"}) > 2
    fig, ax = plt.subplots(figsize=(10.2 if wide else 7.6, 4.8))
    ref = next((p for p in points if p["method"] == "sft"), None)
    by_id = {p["id"]: p for p in points}
    labelled = set()
    for p in points:
        if p["method"] == "sft" or p.get("kl") is None or p.get("gold") is None:
            continue
        m = p["method"]
        colour = METHOD_COLOURS.get(m, "#555")
        ax.errorbar([p["kl"]], [p["gold"]], yerr=[_half_ci(p)], fmt="o", markersize=3.5, color=colour, alpha=0.35,
                    capsize=0, linewidth=0.8, markerfacecolor="none")
    fits = (comparison or {}).get("fits") or {}
    for method, per_seed in fits.items():
        colour = METHOD_COLOURS.get(method, "#555")
        for i, (seed, fit) in enumerate(sorted(per_seed.items(), key=lambda kv: str(kv[0]))):
            xs, ys = seed_curve(fit)
            label = f"{names.get(method, method)}: each seed's fitted curve" if method not in labelled else None
            labelled.add(method)
            ax.plot(xs, ys, color=colour, linestyle=SEED_STYLES[i % len(SEED_STYLES)], linewidth=1.0, alpha=0.7,
                    label=label)
    grid, curves = (comparison or {}).get("grid"), (comparison or {}).get("curves") or {}
    if grid and curves:
        for method, curve in curves.items():
            if curve:
                ax.plot(grid, curve, color=METHOD_COLOURS.get(method, "#555"), linewidth=3.0, alpha=0.9,
                        label=f"{names.get(method, method)}: mean over seeds (compared range)")
        lo, hi = comparison.get("kl_range") or (grid[0], grid[-1])
        ax.axvspan(lo, hi, color="#999", alpha=0.12, linewidth=0)
        ax.text(lo, 1.0, f" compared: KL {lo:.2f}-{hi:.2f}", transform=ax.get_xaxis_transform(), fontsize=7,
                color="#555", va="top")
    elif not fits:  # no comparison: one line per run through its checkpoints
        runs = defaultdict(list)
        for p in points:
            if p["method"] != "sft" and p.get("kl") is not None:
                runs[p["run"]].append(p)
        for run, pts in sorted(runs.items()):
            pts = sorted(pts, key=lambda q: q["step"])
            m = pts[0]["method"]
            xs = ([0.0] if ref else []) + [q["kl"] for q in pts]
            ys = ([ref["gold"]] if ref else []) + [q["gold"] for q in pts]
            label = names.get(m, m) if m not in labelled else None
            labelled.add(m)
            ax.plot(xs, ys, color=METHOD_COLOURS.get(m, "#555"), marker="o", markersize=4, linewidth=1.3, label=label)
    bon = [q for q in (best_of_n or {}).get("points", []) if q.get("gold") is not None]
    if bon:
        ax.plot([q["kl"] for q in bon], [q["gold"] for q in bon], color=METHOD_COLOURS["best_of_n"], marker="s",
                markersize=4, linewidth=1.3, label=names.get("best_of_n", "best-of-n"))
        for q in bon:
            ax.annotate(f"n={q['n']}", (q["kl"], q["gold"]), textcoords="offset points", xytext=(3, -9), fontsize=6.5,
                        color=METHOD_COLOURS["best_of_n"])
    if ref:
        ax.scatter([0], [ref["gold"]], marker="*", s=160, color=METHOD_COLOURS["sft"], zorder=5, label="SFT (reference)")
    ax.set_xlabel("KL(policy || SFT), nats per completion (Monte-Carlo estimate)")
    ax.set_ylabel("mean gold reward, test prompts")
    ax.set_title("Reward vs KL: each seed's curve fitted to all its checkpoints")
    ax.grid(alpha=0.25)
    if wide:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    else:
        ax.legend(loc="best", fontsize=7, frameon=False)
    return _save(fig, path)


def seed_curve(fit: dict, points: int = 120) -> tuple[list[float], list[float]]:
    """One seed's fitted curve from ``compare_frontiers``' ``fits`` entry, from the SFT point
    (or its first checkpoint, without one) to its last checkpoint."""
    import numpy as np

    coef = np.asarray(fit["coef"], dtype=float)
    lo = 0.0 if fit["anchored"] else fit["start"]
    xs = np.linspace(lo, fit["reach"], points)
    d = np.sqrt(xs)
    cols = [d, np.where(d > 0, -d * np.log(np.where(d > 0, d, 1.0)), 0.0)]
    if not fit["anchored"]:
        cols.insert(0, np.ones_like(d))
    ys = fit["origin"] + np.stack(cols[: coef.size], axis=-1) @ coef
    return xs.tolist(), ys.tolist()


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
        ax.errorbar([r["win_rate"]], [i], xerr=[[max(0.0, r["win_rate"] - lo)], [max(0.0, hi - r["win_rate"])]], fmt="o", color=colour,
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
