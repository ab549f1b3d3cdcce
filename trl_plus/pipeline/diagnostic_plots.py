"""Figures of the diagnostics sections (matplotlib, Agg backend), each written as a PNG file.

Each function draws the result of the matching function in ``diagnostics`` and returns the
path it wrote; the look follows ``plots``.
"""

from __future__ import annotations

import math
from pathlib import Path

from .diagnostics import gao_curve
from .plots import METHOD_COLOURS, _plt, _save

BON_COLOUR = "#2ca02c"
RUN_MARKERS = ("o", "s", "^", "D", "v", "P")
TARGET_POWER = 0.8


def _colour(method) -> str:
    return METHOD_COLOURS.get(method, "#555")


def _sorted_points(run: dict) -> list[dict]:
    pts = [p for p in run.get("points") or [] if p.get("kl") is not None]
    return sorted(pts, key=lambda p: (p["kl"], p.get("step") or 0))


def _series(pts: list[dict], key: str, sft: dict | None) -> tuple[list[float], list[float]]:
    """(sqrt KL, value) of the points that have ``key``, from the SFT model at 0 when given."""
    xs, ys = [], []
    if sft is not None and sft.get(key) is not None:
        xs.append(0.0)
        ys.append(sft[key])
    for p in pts:
        if p.get(key) is not None:
            xs.append(math.sqrt(max(p["kl"], 0.0)))
            ys.append(p[key])
    return xs, ys


def overoptimisation_plot(result: dict, runs: list[dict], sft: dict | None, path: Path) -> Path:
    """Gold reward (solid, left axis) and the reward model's score (dashed, right axis)
    against sqrt(KL) per run, each run's fitted gold curve (thin), and a cross where a
    flagged run's gold reward had fallen while the reward model's score rose.

    ``result`` is ``overoptimisation(runs, sft)``; ``runs`` and ``sft`` are what it was given.
    """
    from matplotlib.lines import Line2D

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    ax2 = ax.twinx()
    ax2.spines["right"].set_visible(True)
    by_name = {r["run"]: r for r in result.get("runs", [])}
    gold_base = sft["gold"] if sft and sft.get("gold") is not None else 0.0
    per_method: dict[str, int] = {}
    flagged_drawn = False
    data_y: list[float] = []
    for i, run in enumerate(runs):
        method = run.get("method")
        colour = _colour(method)
        marker = RUN_MARKERS[per_method.get(method, 0) % len(RUN_MARKERS)]
        per_method[method] = per_method.get(method, 0) + 1
        pts = _sorted_points(run)
        xs, ys = _series(pts, "gold", sft)
        if xs:
            ax.plot(xs, ys, color=colour, linestyle="-", marker=marker, markersize=4, linewidth=1.4,
                    label=str(run.get("run")))
            data_y += [y for y in ys if y is not None]
        pxs, pys = _series(pts, "proxy", sft)
        if pxs:
            ax2.plot(pxs, pys, color=colour, linestyle="--", marker=marker, markersize=3, linewidth=1.1, alpha=0.6)
        info = by_name.get(run.get("run")) or (result["runs"][i] if i < len(result.get("runs", [])) else None)
        if not info:
            continue
        fit = info.get("gold_fit")
        if fit and xs:
            right = max(xs)
            if info.get("peak_sqrt_kl") is not None and info["peak_sqrt_kl"] <= 1.5 * right:
                right = max(right, info["peak_sqrt_kl"])  # show the turn when it is near the data
            # Drawn where the run's checkpoints are (from its first to past its last), not
            # from the SFT point: between them a fit to a few clustered points is a guess.
            left = min((x for x in xs if x > 0), default=0.0)
            grid = [left + (right * 1.05 - left) * k / 100 for k in range(101)]
            ax.plot(grid, [gold_base + v for v in gao_curve(grid, fit["alpha"], fit["beta"])], color=colour,
                    linewidth=0.7, alpha=0.7)
        drop = info.get("drop")
        if info.get("overoptimised") and drop:
            x = math.sqrt(max(drop["to_kl"], 0.0))
            ax.scatter([x], [drop["gold_to"]], marker="X", s=90, color="black", zorder=6)
            # Left of the cross: the last checkpoint sits against the proxy's axis.
            ax.annotate("over-optimised", (x, drop["gold_to"]), textcoords="offset points", xytext=(-8, -12),
                        ha="right", fontsize=7, color="black")
            flagged_drawn = True
    if data_y:
        # The fits are only evidence where the checkpoints are: a two-parameter fit to three
        # clustered points can swing far between the SFT point and its first checkpoint, so
        # the axis follows the data, not the fits.
        lo, hi = min(data_y), max(data_y)
        pad = 0.25 * (hi - lo) or 0.05
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("sqrt(KL(policy || SFT)), sqrt(nats)")
    ax.set_ylabel("mean gold reward (solid)")
    ax2.set_ylabel("mean reward-model score (dashed)")
    ax.set_title("Reward over-optimisation: gold reward and the optimised reward model's score")
    ax.grid(alpha=0.25)
    keys = [Line2D([], [], color="#555", linestyle="-", label="gold reward"),
            Line2D([], [], color="#555", linestyle="--", label="reward-model score"),
            Line2D([], [], color="#555", linewidth=0.7, label="fit d(alpha - beta log d)")]
    if flagged_drawn:
        keys.append(Line2D([], [], color="black", marker="X", linestyle="", label="gold fell, proxy rose"))
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + keys, loc="best", fontsize=7, frameon=False)
    return _save(fig, path)


def best_of_n_plot(result: dict, path: Path, sft_gold: float | None = None) -> Path:
    """Gold reward of best-of-n against its estimated KL (ties and duplicates counted), one
    point per n (annotated), with 95% error bars (gold over prompts; KL over prompts where
    given), the same rewards as hollow markers at the upper bound log n - (n - 1) / n where
    that differs, and the SFT model's gold reward as a star at KL 0.

    ``result`` is ``best_of_n(...)``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    pts = [p for p in result.get("points", []) if p.get("gold") is not None and p.get("kl") is not None]
    if pts:
        err = [1.96 * p["gold_stderr"] if p.get("gold_stderr") is not None else 0.0 for p in pts]
        xerr = [1.96 * p["kl_stderr"] if p.get("kl_stderr") is not None else 0.0 for p in pts]
        ax.errorbar([p["kl"] for p in pts], [p["gold"] for p in pts], yerr=err, xerr=xerr, color=BON_COLOUR,
                    marker="o", markersize=4, capsize=2, linewidth=1.4, label="best-of-n at its estimated KL")
        bound = [p for p in pts if p.get("kl_upper_bound") is not None and abs(p["kl_upper_bound"] - p["kl"]) > 1e-9]
        if bound:
            ax.plot([p["kl_upper_bound"] for p in bound], [p["gold"] for p in bound], color=BON_COLOUR, marker="o",
                    markersize=5, markerfacecolor="none", linestyle=":", linewidth=1.0, alpha=0.8,
                    label="same, at the upper bound log n - (n-1)/n")
        for p in pts:
            ax.annotate(f"n={p['n']}", (p["kl"], p["gold"]), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=BON_COLOUR)
    else:
        ax.text(0.5, 0.5, "no best-of-n point has a gold reward", ha="center", va="center", transform=ax.transAxes)
    if sft_gold is not None:
        ax.scatter([0], [sft_gold], marker="*", s=160, color=METHOD_COLOURS["sft"], zorder=5, label="SFT (reference)")
    ax.set_xlabel("KL(best-of-n || SFT), nats (ties and duplicates counted)")
    ax.set_ylabel("mean gold reward (held-out judge)")
    ax.set_title("Best-of-n baseline: the reward model picks, the gold reward judges")
    ax.grid(alpha=0.25)
    if pts or sft_gold is not None:
        ax.legend(loc="best", fontsize=8, frameon=False)
    return _save(fig, path)


def power_plot(curve, path: Path, current_seeds: int | None = None, needed=None, effect: float | None = None) -> Path:
    """Power against seeds per method, a dotted line at 80% power and the current seed count.

    ``curve`` is ``trl_plus.eval.power_by_seeds(...)``, or a dict of them keyed by a label (a method name gets
    its colour). ``needed``: the seed count reaching 80% power (an int, or a dict keyed like
    ``curve``), drawn as a marker on the curve. ``effect``: the difference the curve is for
    (the report's ``report.min_effect``), named in the title.
    """
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    curves = curve if isinstance(curve, dict) else {None: curve}
    needs = needed if isinstance(needed, dict) else {label: needed for label in curves}
    drawn = False
    for label, c in curves.items():
        if not c:
            continue
        colour = _colour(label) if label is not None else "#333"
        xs, ys = [p["seeds"] for p in c], [p["power"] for p in c]
        ax.plot(xs, ys, color=colour, marker="o", markersize=3, linewidth=1.4,
                label=str(label) if label is not None else None)
        drawn = True
        n = needs.get(label)
        hit = next((p for p in c if p["seeds"] == n), None)
        if hit:
            ax.scatter([n], [hit["power"]], s=50, facecolors="none", edgecolors=colour, zorder=5)
            ax.annotate(f"{n} seeds", (n, hit["power"]), textcoords="offset points", xytext=(4, -12), fontsize=7,
                        color=colour)
    if not drawn:
        ax.text(0.5, 0.5, "no power curve (no seed-to-seed spread measured)", ha="center", va="center",
                transform=ax.transAxes)
    ax.axhline(TARGET_POWER, color="#888", linestyle=":", linewidth=1)
    ax.text(ax.get_xlim()[0], TARGET_POWER, " 80% power", fontsize=7, color="#666", va="bottom")
    if current_seeds is not None:
        ax.axvline(current_seeds, color="#333", linestyle="--", linewidth=1)
        ax.text(current_seeds, 0.02, f" now: {current_seeds} seeds", fontsize=7, color="#333", va="bottom")
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("seeds per method")
    ax.set_ylabel("power (two-sided Welch t-test)")
    ax.set_title("Seeds needed to detect the difference" if effect is None else
                 f"Seeds needed to detect the stated effect of {effect:g} (report.min_effect)")
    ax.grid(alpha=0.25)
    if any(label is not None for label in curves) and drawn:
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _save(fig, path)


def _hist(ax, hist: dict, colour: str) -> None:
    ax.stairs(hist["counts"], hist["edges"], fill=True, color=colour, alpha=0.75)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_ylabel("pairs")
    ax.grid(axis="y", alpha=0.25)


def preference_quality_plot(result: dict, path: Path) -> Path:
    """Histograms of the gold margin (chosen minus rejected gold reward; left, when the pairs
    have gold scores) and of the length difference (chosen minus rejected), each with the
    zero line.

    ``result`` is ``preference_quality(...)``.
    """
    plt = _plt()
    margin = result.get("gold_margin")
    lengths = result.get("length_difference_histogram")
    panels = (["margin"] if margin else []) + ["length"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "margin":
            _hist(ax, margin["histogram"], "#9467bd")
            ax.set_xlabel("gold margin (chosen minus rejected)")
            ax.set_title(f"{margin['non_positive_share']:.0%} of pairs at or below 0", fontsize=9)
        elif lengths:
            _hist(ax, lengths, "#7f7f7f")
            unit = lengths.get("unit", "words")
            ax.set_xlabel(f"length difference, {unit} (chosen minus rejected)")
            share = result.get("chosen_longer_share")
            if share is not None:
                ax.set_title(f"chosen longer in {share:.0%} of pairs", fontsize=9)
        else:
            ax.text(0.5, 0.5, "no pairs", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)
