"""``trl-plus plugins``: every plugin, its version and the components it adds.

Components are listed by name, one line per kind. The trainer kinds and recipe sections a
plugin adds (the built-in pipeline and evaluation are plugins like any other) get a line
each too, saying what they are: what a trainer trains on, what a section does.
"""

from __future__ import annotations

import json

# The kinds whose entries are descriptors (trl_plus.protocols): each gets its own line.
_DESCRIBED = ("trainer_kinds", "recipe_sections")


def add_parser(sub) -> None:
    p = sub.add_parser("plugins", help="list plugins and the components they add")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _trainer_kind_lines(kind) -> list[str]:
    return [f"{kind.name} (trains on {kind.consumes})" + (f": {kind.description}" if kind.description else "")]


def _recipe_section_lines(section) -> list[str]:
    """The section's key and description, then what else it does, on a line of its own."""
    notes = []
    if getattr(section, "standalone", False):
        notes.append("runs a recipe on its own (no trainer, model or data needed)")
    claims = tuple(getattr(section, "claims", ()) or ())
    if claims:
        notes.append(f"checks {', '.join(f'{c}:' for c in claims)} too")
    line = f"{section.key}:" + (f" {section.description}" if section.description else "")
    return [line] + (["    " + "; ".join(notes)] if notes else [])


def run(args) -> int:
    from ..manager import Hooks

    hooks = Hooks()
    rows = hooks.describe_plugins()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    described = {"trainer_kinds": {name: _trainer_kind_lines(k) for name, k in hooks.trainer_kinds.items()},
                 "recipe_sections": {name: _recipe_section_lines(s) for name, s in hooks.recipe_sections.items()}}
    for row in rows:
        version = f" {row['version']}" if row["version"] else ""
        package = f" ({row['package']}{version})" if row["package"] else version
        print(f"{row['name']}{package}")
        for kind, names in row["components"].items():
            print(f"    {kind.replace('_', ' ')}: {', '.join(names)}")
            for name in names if kind in _DESCRIBED else ():
                for line in described[kind][name]:
                    print(f"        {line}")
        if not row["components"]:
            print(f"    hooks: {', '.join(row['hooks'])}")
    return 0
