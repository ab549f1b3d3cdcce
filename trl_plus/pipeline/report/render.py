"""Writing the report: the figures (``plots``, ``diagnostic_plots``), ``report.json``,
and ``report.md`` / a self-contained ``report.html`` from the Jinja templates in
``trl_plus/pipeline/templates``; and the pipeline's report stage around it."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from .. import compute_plots
from .. import diagnostic_plots as dplots
from .. import plots
from ..layout import DONE, fingerprint, write_json
from .build import build
from .formatting import NAMES, _ci, _fmt, _signed

TEMPLATE = "report.html.j2"


def run_report(ctx) -> Path:
    fp = fingerprint("report", ctx.fingerprints.get("eval"), ctx.config.report.model_dump(), time.time())
    with ctx.bar("report", 1) as bar:
        folder = render_report(ctx.run.root, report_cfg=ctx.config.report.model_dump())
        bar.update(1)
    write_json(folder / DONE, {"fingerprint": fp, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return folder


def render_report(run_dir, report_cfg: dict | None = None) -> Path:
    """Write ``report/`` (report.md, report.html, report.json, plots/*.png) from a run folder."""
    root = Path(run_dir)
    out = root / "report"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    if report_cfg is not None:
        write_json(out / "report_config.json", report_cfg)
    data = build(root, report_cfg)
    p = out / "plots"
    plots.METHOD_COLOURS.assign(data["arms"])  # each arm beyond the pipeline's own its colour, in every figure
    # The frontier shows every arm: the curves of the one comparison with two, of the ranking with more.
    primary = data["comparisons"][0]["gold"] if data["comparisons"] else None
    shown_curves = data["ranking"] if len(data["arms"]) > 2 else primary
    over = data["_over_inputs"]
    power = data["power"] or {}
    figures = {
        "frontier": plots.frontier(data["_points_full"], NAMES, p / "frontier.png", comparison=shown_curves,
                                   best_of_n=data["best_of_n"]),
        "compute": compute_plots.compute_frontier(data["_points_full"], data["compute"], NAMES, p / "compute.png")
        if data["compute"]["drawable"] else None,
        "win_rates": plots.win_rates(data["win_rates"], p / "win_rates.png") if data["win_rates"] else None,
        "best_of_n": dplots.best_of_n_plot(data["best_of_n"], p / "best_of_n.png", sft_gold=data["reference"]["mean"])
        if data["best_of_n"] else None,
        "overoptimisation": dplots.overoptimisation_plot(over["result"], over["runs"], over["sft"], p / "overoptimisation.png")
        if over else None,
        "power": dplots.power_plot(power["curve"], p / "power.png", current_seeds=power.get("current_seeds"),
                                   needed=power.get("seeds_needed"), effect=power.get("min_effect"))
        if power.get("curve") else None,
        "preference_quality": dplots.preference_quality_plot(data["preference_quality"], p / "preference_quality.png")
        if data["preference_quality"] else None,
        "training": plots.training_curves(data["histories"], p / "training.png") if data["histories"] else None,
        "cost": plots.cost(data["costs"], p / "cost.png") if data["costs"] else None,
    }
    for key in ("_points_full", "_over_inputs", "histories"):
        data.pop(key)
    write_json(out / "report.json", data)
    shown = {k: v for k, v in figures.items() if v}
    (out / "report.md").write_text(_markdown(data, shown))
    (out / "report.html").write_text(_html(data, shown))
    return out


def _render(name: str, **context) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("trl_plus.pipeline", "templates"),
                             autoescape=lambda name: bool(name) and name.endswith(".html.j2"), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(f=_fmt, ci=_ci, signed=_signed)
    return env.get_template(name).render(names=_Names(NAMES), **context)


class _Names(dict):
    """The display names, an arm that is a trainer kind shown by its own name."""

    def __missing__(self, key):
        return key


def _html(data: dict, figures: dict) -> str:
    images = {k: base64.b64encode(Path(p).read_bytes()).decode() for k, p in figures.items()}
    return _render(TEMPLATE, d=data, images=images)


def _markdown(data: dict, figures: dict) -> str:
    images = {k: f"plots/{Path(p).name}" for k, p in figures.items()}
    return _render("report.md.j2", d=data, images=images)
