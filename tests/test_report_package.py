"""The report as a package: it reads the run folder through ``pipeline.layout`` and never
imports a stage, and it leaves its statistics to ``trl_plus.eval.stats``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import trl_plus.pipeline.report as report

PACKAGE = Path(report.__file__).parent
STAGES = ("runner", "policy", "evaluate", "stages", "sampling", "corpus")


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth of the file (function-level imports too),
    relative imports resolved against ``trl_plus.pipeline.report``."""
    package = ["trl_plus", "pipeline", "report"]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out += [module] + [f"{module}.{a.name}" for a in node.names]
    return out


def test_no_report_module_imports_a_stage_or_computes_its_own_statistics():
    stages = {f"trl_plus.pipeline.{s}" for s in STAGES}
    for path in sorted(PACKAGE.glob("*.py")):
        imported = _imports(path)
        assert not stages & set(imported), (path.name, sorted(stages & set(imported)))
        assert not any(m == "scipy" or m.startswith("scipy.") for m in imported), path.name


def test_importing_the_report_loads_no_stage(tmp_path):
    code = ("import json, sys, trl_plus.pipeline.report, trl_plus.pipeline.report.render; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('trl_plus.pipeline.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    loaded = json.loads(out.stdout)
    assert "trl_plus.pipeline.layout" in loaded
    assert not [m for m in loaded if m.rsplit(".", 1)[-1] in STAGES], loaded


def test_the_method_rows_use_the_one_t_interval():
    from trl_plus.eval.stats import t_interval

    cmp = {"per_seed": {"ppo": {"0": 0.1, "1": 0.3, "2": None, "3": 0.2}}, "seeds": {"ppo": 4}}
    (row,) = report._method_rows(cmp, reference=0.05)
    expected = t_interval([0.1, 0.3, 0.2])
    assert (row["mean"], row["ci"], row["sd"]) == (expected["mean"], expected["ci"], expected["sd"])
    assert row["seeds"] == 4 and row["gain"] == expected["mean"] - 0.05
