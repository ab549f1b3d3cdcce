"""The recipe package stands below the trainers, the pipeline and the evaluation: importing
it imports none of them (nor torch), and each of its modules keeps to one concern."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "trl_plus" / "recipe"


def _modules_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_the_recipe_package_imports_no_trainer_pipeline_or_eval_module():
    loaded = _modules_after("import trl_plus.recipe")
    above = [m for m in loaded if m.startswith(("trl_plus.trainers", "trl_plus.pipeline", "trl_plus.eval",
                                                "trl_plus.commands"))]
    assert above == [], above
    assert "torch" not in loaded


def test_the_recipe_package_loads_no_module_by_name():
    # a trainer's config comes from the table of trainer kinds, never from an import string
    for path in RECIPE.glob("*.py"):
        text = path.read_text()
        assert "import_module" not in text and "__import__" not in text, path.name


def test_recipe_modules_are_small():
    sizes = {path.name: len(path.read_text().splitlines()) for path in RECIPE.glob("*.py")}
    assert sizes and all(n < 200 for n in sizes.values()), sizes


def test_building_the_plugin_manager_imports_no_pipeline_stage():
    # the pipeline's and the evaluation's recipe sections are light built-in plugins
    loaded = _modules_after("from trl_plus.manager import Hooks\nHooks().recipe_sections")
    assert "trl_plus.pipeline.section" in loaded and "trl_plus.eval.section" in loaded
    heavy = [m for m in loaded if m.startswith(("trl_plus.pipeline.", "trl_plus.eval."))
             and not m.endswith(".section")]
    assert heavy == [], heavy
    assert "torch" not in loaded
