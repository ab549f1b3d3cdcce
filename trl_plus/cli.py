"""The ``trl-plus`` command. The only code that reads argv, prints for a person or exits.

Exit codes: 0 success; 1 a run failed (a component raised at run time); 2 a user error
(bad recipe, unknown component, missing file), reported in one line without a traceback
unless ``--debug``. A failed save is a run failure (1); 130 / 143: interrupted by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback

from .errors import ComponentError, SaveError, TrlPlusError

# Each command is a module in trl_plus.commands with ``add_parser(subparsers)`` and
# ``run(args) -> int``.
COMMANDS = ("plugins", "validate", "train", "launch", "eval", "compare", "report", "quickstart")


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    parser = argparse.ArgumentParser(
        prog="trl-plus", description="PPO and DPO with pluggable rewards, KL schedules and filters."
    )
    parser.add_argument("--version", action="version", version=f"trl-plus {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"trl_plus.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "debug", False):
        os.environ["TRL_PLUS_DEBUG"] = "1"
    try:
        return int(args.func(args) or 0)
    except (ComponentError, SaveError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"trl-plus: error: {exc}", file=sys.stderr)
        return 1
    except TrlPlusError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"trl-plus: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a TrainingInterrupted carries 143 for SIGTERM
        print(f"trl-plus: interrupted{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))
