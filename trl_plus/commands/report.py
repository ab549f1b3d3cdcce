"""``trl-plus report RUN_DIR``: re-render report.md / report.html from a finished run folder."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="re-render the comparison report of a run folder")
    p.add_argument("run_dir", help="a folder written by `trl-plus compare` or `trl-plus quickstart`")
    p.add_argument("--title", default=None, help="report title (default: the recipe's report.title)")
    p.add_argument("--kl-budget", type=float, default=None, help="compare methods at KL <= this (default: automatic)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import DataError
    from ..pipeline import render_report
    from ..pipeline.rundir import read_json
    from . import cli_path

    root = cli_path(args.run_dir)
    if not (root / "eval").is_dir():
        raise DataError(f"{root}: not a finished run folder (no eval/); run `trl-plus compare` first")
    cfg = dict(read_json(root / "report" / "report_config.json", {}) or {})
    if args.title:
        cfg["title"] = args.title
    if args.kl_budget is not None:
        cfg["kl_budget"] = args.kl_budget
    out = render_report(root, report_cfg=cfg)
    print(f"report: {out / 'report.html'}")
    print(f"        {out / 'report.md'}")
    return 0
