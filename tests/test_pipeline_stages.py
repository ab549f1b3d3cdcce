"""The pipeline's structure: a runner that loops over a list of stages, stages that share
a context and the run folder's layout but never import one another, and a sweep planned
from the table of trainer kinds (what each kind consumes), not from the stages' names."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import trl_plus.pipeline as pipeline
from trl_plus.manager import Hooks
from trl_plus.recipe import load_recipe

PACKAGE = Path(pipeline.__file__).parent
STAGES = ("stages", "policy", "evaluate", "report")  # the modules whose functions the runner calls
BELOW = ("runner", *STAGES)  # what a stage may never import: another stage, or the runner


def _imported(path: Path) -> set[str]:
    """The pipeline modules a file imports, at any depth (function-level imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trl_plus.pipeline."):
            names.add(node.module.split(".")[2])
    return names


def test_no_stage_imports_another_stage_or_the_runner():
    for stage in STAGES[:-1]:
        imported = _imported(PACKAGE / f"{stage}.py")
        assert not imported & set(BELOW), (stage, sorted(imported & set(BELOW)))
    for module in ("layout", "plan", "context", "launch", "rundir", "provenance", "progress", "sampling"):
        imported = _imported(PACKAGE / f"{module}.py")
        assert not imported & set(BELOW), (module, sorted(imported & set(BELOW)))


def test_the_runner_runs_a_list_of_stages():
    from trl_plus.pipeline.config import parse
    from trl_plus.pipeline.plan import planned_runs
    from trl_plus.pipeline.runner import Stage, pipeline_stages

    config = parse(load_recipe("quickstart"))
    ctx = SimpleNamespace(config=config, runs=planned_runs(config, Hooks().trainer_kinds))
    stages = pipeline_stages(ctx)
    assert all(isinstance(s, Stage) and callable(s.run) for s in stages)
    names = [s.name for s in stages]
    assert names[:4] == ["corpus", "sft", "pairs", "reward"] and names[-2:] == ["eval", "report"]
    assert [s.rel for s in stages[4:-2]] == [run.rel for run in ctx.runs]


def test_the_sweep_follows_what_each_trainer_kind_consumes():
    from dataclasses import replace

    from trl_plus.pipeline.config import parse
    from trl_plus.pipeline.plan import planned_runs

    config = parse(load_recipe("quickstart"))
    kinds = Hooks().trainer_kinds
    keys = {run.method: run.strength_key for run in planned_runs(config, kinds)}
    assert keys == {"ppo": "kl_coef", "dpo": "beta"}
    # the key comes from the kind's table entry, not from the stage's name
    swapped = {**kinds, "dpo": replace(kinds["dpo"], consumes="prompts"), "ppo": replace(kinds["ppo"], consumes="pairs")}
    stages = SimpleNamespace(seeds=[0], ppo=SimpleNamespace(betas=[0.3]), dpo=SimpleNamespace(kl_targets=None, kl_coefs=[0.2]))
    runs = planned_runs(SimpleNamespace(methods=["ppo", "dpo"], stages=stages), swapped)
    assert {(r.method, r.strength_key, r.strength) for r in runs} == {("ppo", "beta", 0.3), ("dpo", "kl_coef", 0.2)}
