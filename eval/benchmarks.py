"""lm-eval benchmarks: hub task names when online, and the shipped offline task pack.

Every number comes from ``lm_eval.simple_evaluate`` with the ``hf`` model (an in-memory
model is wrapped in ``HFLM``). The offline pack lives in ``eval/tasks/`` as YAML + JSONL;
lm-eval resolves relative ``data_files`` against the working directory, so each run
writes a temporary copy of the YAML files with absolute paths.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from trl_plus.errors import DataError, RecipeError

OFFLINE_PACK = "trl_plus_offline"  # names every task of the shipped pack


def offline_task_dir() -> Path:
    return Path(str(resources.files("trl_plus.eval").joinpath("tasks")))


def offline_tasks() -> list[str]:
    """Names of the shipped offline tasks."""
    names = []
    for path in sorted(offline_task_dir().glob("*.yaml")):
        names.append(yaml.safe_load(path.read_text())["task"])
    return names


def expand_tasks(tasks: list[str]) -> list[str]:
    out: list[str] = []
    for task in tasks:
        for name in offline_tasks() if task == OFFLINE_PACK else [task]:
            if name not in out:
                out.append(name)
    return out


def materialise_offline_pack(target: str | Path) -> Path:
    """Copy the pack's YAML files into ``target`` with absolute ``data_files`` paths."""
    source, target = offline_task_dir(), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        files = config.get("dataset_kwargs", {}).get("data_files", {})
        for split, rel in list(files.items()):
            files[split] = str((source / rel).resolve())
        (target / path.name).write_text(yaml.safe_dump(config, sort_keys=False))
    return target


@functools.lru_cache(maxsize=None)
def _pack_dir() -> str:
    """The offline pack materialised into a folder that lives as long as the process
    (lm-eval reads a task's YAML file when the task is loaded, not when it is indexed)."""
    workdir = tempfile.mkdtemp(prefix="trl-plus-lm-eval-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    return str(materialise_offline_pack(workdir))


@functools.lru_cache(maxsize=None)
def task_manager(shipped_only: bool = False):
    """lm-eval's task index with the offline pack included, built once per process.

    Indexing lm-eval's own task tree takes seconds (more than scoring a tiny model), so an
    eval stage that runs lm-eval on many checkpoints pays for it once, and not at all
    when every task is from the shipped pack (``shipped_only``: the pack alone is indexed).
    """
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=_pack_dir(), include_defaults=not shipped_only)


@contextlib.contextmanager
def _no_environment_dump():
    """lm-eval adds a dump of the environment to its results (``pip list`` and more, run as
    subprocesses: about 2 s a call) and the ``git describe`` of the folder it runs in (which
    prints "fatal: not a git repository" outside one). trl-plus keeps none of it (the
    manifest records the versions that matter), so inside :func:`run_lm_eval` neither is
    collected."""
    import lm_eval.evaluator as evaluator

    quiet = {"add_env_info": lambda storage: None, "get_git_commit_hash": lambda: None}
    originals = {n: getattr(evaluator, n) for n in quiet if hasattr(evaluator, n)}  # others: left alone
    for name in originals:
        setattr(evaluator, name, quiet[name])
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(evaluator, name, original)


def _check_tokenizer(tokenizer) -> None:
    if tokenizer is not None and tokenizer.eos_token is None and tokenizer.bos_token is None:
        raise DataError("lm-eval needs a tokenizer with an eos or a bos token; this one has neither")


def run_lm_eval(
    model: Any,
    tasks: list[str],
    *,
    tokenizer=None,
    batch_size: int = 16,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    device: str | None = None,
    seed: int = 0,
    log_samples: bool = True,
) -> dict:
    """Run lm-eval on ``model`` (a path / hub id, or an in-memory ``PreTrainedModel``).

    Returns ``{"results": {task: {metric: value}}, "samples": {task: [per item]},
    "versions": ..., "n_samples": ...}``, JSON-serialisable.
    """
    import lm_eval
    from lm_eval.utils import handle_non_serializable

    import torch

    if not tasks:
        return {}
    names = expand_tasks(list(tasks))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    manager = task_manager(shipped_only=set(names) <= set(offline_tasks()))
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        from trl_plus.registry import did_you_mean

        hint = did_you_mean(unknown[0], offline_tasks())
        raise RecipeError(
            f"unknown lm-eval task {unknown[0]!r}.{hint} Shipped offline tasks: {', '.join(offline_tasks())} "
            f"(or {OFFLINE_PACK!r} for all of them); hub tasks need lm-eval's task list",
            "eval.tasks",
        )
    if isinstance(model, (str, Path)):
        lm, model_args = "hf", {"pretrained": str(model), "device": device, "dtype": "float32"}
    else:
        from lm_eval.models.huggingface import HFLM

        _check_tokenizer(tokenizer)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
        model_args = None
    with _no_environment_dump():
        out = lm_eval.simple_evaluate(
            model=lm,
            model_args=model_args,
            tasks=names,
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            limit=limit,
            task_manager=manager,
            log_samples=log_samples,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            bootstrap_iters=1000,
        )
    if out is None:  # non-zero ranks under distributed evaluation
        return {}
    out = json.loads(json.dumps(out, default=handle_non_serializable))
    return {
        "tasks": names,
        "results": out.get("results", {}),
        "versions": out.get("versions", {}),
        "n_samples": out.get("n-samples", {}),
        "samples": {task: [_compact(s) for s in rows] for task, rows in out.get("samples", {}).items()},
    }


def _compact(sample: dict) -> dict:
    """What item-by-item comparison needs from one lm-eval sample."""
    keep = {"doc_id": sample.get("doc_id"), "target": sample.get("target")}
    keep["response"] = sample.get("filtered_resps")
    for key in sample.get("metrics", []) or []:
        if key in sample:
            keep[key] = sample[key]
    return keep


def compare_samples(samples_a: dict, samples_b: dict) -> dict:
    """Item-by-item comparison of two checkpoints on the same tasks (first metric of each item).

    Per task: items where only A is right, only B, both, neither, and the mean difference.
    """
    report = {}
    for task in sorted(set(samples_a) & set(samples_b)):
        a = {s["doc_id"]: s for s in samples_a[task]}
        b = {s["doc_id"]: s for s in samples_b[task]}
        ids = sorted(set(a) & set(b))
        metric = next((k for k in a[ids[0]] if k not in ("doc_id", "target", "response")), None) if ids else None
        if metric is None:
            continue
        counts = {"only_a": 0, "only_b": 0, "both": 0, "neither": 0}
        diffs = []
        for i in ids:
            va, vb = float(a[i][metric]), float(b[i][metric])
            diffs.append(va - vb)
            counts["both" if va and vb else "only_a" if va else "only_b" if vb else "neither"] += 1
        report[task] = {"metric": metric, "items": len(ids), **counts, "mean_difference": sum(diffs) / len(ids)}
    return report
