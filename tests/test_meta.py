"""Meta-tests that keep everyone honest: every hook is tested and documented, every
troubleshooting row names a test, and the README and docs/ stay a whole: a short README
that links every page, links that resolve, every command and option described."""

import argparse
import inspect
import re
from pathlib import Path

import pytest

from trl_plus import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("trl_plus_"))


def signature(name: str) -> str:
    params = inspect.signature(getattr(hookspecs, name)).parameters
    return f"{name}({', '.join(params)})"


def test_hooks_exist():
    assert len(HOOKS) >= 11


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook):
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_meta.py")
    # implemented in a test (as a plugin would), or called through the facade
    facade_method = {
        "trl_plus_register_reward_sources": "reward_sources",
        "trl_plus_register_kl_schedules": "kl_schedules",
        "trl_plus_register_data_filters": "data_filters",
        "trl_plus_register_judges": "judges",
        "trl_plus_register_trainer_kinds": "trainer_kinds",
        "trl_plus_register_recipe_sections": "recipe_sections",
    }.get(hook, hook.removeprefix("trl_plus_"))
    assert f"def {hook}(" in tests or re.search(rf"\.{facade_method}\b", tests), hook


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    reference = (DOCS / "plugins.md").read_text()
    assert signature(hook) in reference, f"docs/plugins.md lacks `{signature(hook)}`"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_has_a_reference_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    params = inspect.signature(getattr(hookspecs, hook)).parameters
    assert doc and all(f":param {p}:" in doc for p in params), hook
    if getattr(hookspecs, hook).trl_plus_spec["firstresult"]:
        assert "Stops at first non-None result" in doc


def troubleshooting_rows() -> list[list[str]]:
    """The troubleshooting table's rows (docs/troubleshooting.md), as cells."""
    page = (DOCS / "troubleshooting.md").read_text()
    section = page.split("# Troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row] for row in rows[1:]]  # the header row off


def test_every_troubleshooting_row_names_a_test_that_exists():
    rows = troubleshooting_rows()
    assert len(rows) >= 20, "the troubleshooting table should cover the failures users meet"
    for row in rows:
        refs = re.findall(r"(tests/test_\w+\.py)::(\w+)", row[-1])
        assert refs, f"row without a test: {row[0]}"
        for path, name in refs:
            source = (ROOT / path).read_text() if (ROOT / path).exists() else ""
            assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name} (row {row[0]!r}) does not exist"


# -- the README and docs/ ----------------------------------------------------------------

README = ROOT / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(path: Path) -> str:
    """A page without its code blocks (a `[x](y)` in code is no link)."""
    return FENCE.sub("", path.read_text())


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(path), re.M):
        base = slug(heading)
        out.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return out


def test_the_readme_is_short_and_links_every_docs_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; the reference belongs in docs/"
    targets = {link.split("#", 1)[0] for link in links(README)}
    docs = sorted(DOCS.glob("*.md"))
    assert len(docs) >= 8, "the reference pages are missing from docs/"
    missing = [f"docs/{page.name}" for page in docs if f"docs/{page.name}" not in targets]
    assert not missing, f"README.md does not link {missing}"


def test_the_readme_keeps_the_two_set_up_commands_verbatim():
    readme = README.read_text()
    for command in (
        "pip install torch==2.13.0 && pip install -e . && trl-plus quickstart --out runs/quickstart",
        'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest tests -q',
    ):
        assert f"\n{command}\n" in readme, command


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for link in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.is_file():
            broken.append(f"{link} (no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link} (no heading #{anchor} in {path.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_command_and_option_is_described():
    from trl_plus.cli import build_parser

    text = "".join(page.read_text() for page in pages())
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in sub.choices.items():
        if f"`trl-plus {name}" not in README.read_text():
            missing.append(f"trl-plus {name} (in README.md)")
        for action in parser._actions:
            missing += [f"trl-plus {name} {o}" for o in action.option_strings
                        if o.startswith("--") and o != "--help" and o not in text]
    assert not missing, f"not described in README.md or docs/: {missing}"
