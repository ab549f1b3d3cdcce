"""``trl-plus plugins``: every plugin, its version and the components it adds."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("plugins", help="list plugins and the components they add")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import print_json
    from ..manager import Hooks

    rows = Hooks().describe_plugins()
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        version = f" {row['version']}" if row["version"] else ""
        package = f" ({row['package']}{version})" if row["package"] else version
        print(f"{row['name']}{package}")
        for kind, names in row["components"].items():
            print(f"    {kind.replace('_', ' ')}: {', '.join(names)}")
        if not row["components"]:
            print(f"    hooks: {', '.join(row['hooks'])}")
    return 0
