"""``trl-plus report RUN_DIR``: re-render report.md / report.html from a run folder.

A run folder whose comparison did not finish (interrupted during training or eval) is
rendered too, marked incomplete: its title says so and the verdict's first line lists
what is missing (runs not trained, checkpoints not evaluated)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="re-render the comparison report of a run folder")
    p.add_argument("run_dir", help="a folder written by `trl-plus compare` or `trl-plus quickstart`")
    p.add_argument("--title", default=None, help="report title (default: the recipe's report.title)")
    p.add_argument("--kl-budget", type=float, default=None, help="compare methods at KL <= this (default: automatic)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from ..errors import DataError
    from ..pipeline import render_report
    from ..pipeline.layout import read_json
    from ..pipeline.rundir import check_run_path, run_folder_error
    from . import cli_path

    root = cli_path(args.run_dir)
    check_run_path(root, "RUN_DIR", margin=0, write=False)  # a name too long, a file in the way: said in one line
    if not root.exists():
        raise DataError(f"RUN_DIR: {root} does not exist; give a folder written by `trl-plus compare`")
    if not (root / "eval").is_dir():
        outer = next((p for p in root.parents if (p / "plan.json").exists() or (p / "pipeline.json").exists()), None)
        hint = f"; it is inside the run folder {outer}: give that one" if outer else "; run `trl-plus compare` first"
        raise DataError(f"{root}: not a finished run folder (no eval/){hint}")
    # the report is written into the run folder: say so now if it cannot be
    check_run_path(root / "report" if (root / "report").is_dir() else root, "RUN_DIR", margin=64)
    cfg = dict(read_json(root / "report" / "report_config.json", {}) or {})
    if args.title:
        cfg["title"] = args.title
    if args.kl_budget is not None:
        cfg["kl_budget"] = args.kl_budget
    try:
        out = render_report(root, report_cfg=cfg)
    except OSError as exc:
        error = run_folder_error(exc, root)
        if error is None:
            raise
        raise error from exc
    print(f"report: {out / 'report.html'}")
    print(f"        {out / 'report.md'}")
    data = read_json(out / "report.json", {}) or {}
    if data.get("complete") is False:
        print(f"trl-plus: warning: {root} is an incomplete run: the report says so in its title and lists what is "
              "missing in its verdict", file=sys.stderr)
    return 0
