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


def _manager_for(names: list[str]):
    return task_manager(shipped_only=set(names) <= set(offline_tasks()))


def _check_known(names: list[str], manager) -> None:
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        from trl_plus.registry import did_you_mean

        hint = did_you_mean(unknown[0], offline_tasks()) or did_you_mean(unknown[0], manager.all_tasks)
        raise RecipeError(
            f"unknown lm-eval task {unknown[0]!r}.{hint} Shipped offline tasks: {', '.join(offline_tasks())} "
            f"(or {OFFLINE_PACK!r} for all of them); hub tasks need lm-eval's task list",
            "eval.tasks",
        )


# ``dataset_path`` values that name a ``datasets`` builder reading local ``data_files``.
_FILE_BUILDERS = ("json", "csv", "parquet", "arrow", "text")


def task_datasets(names: list[str], manager=None) -> dict[str, dict]:
    """The data each lm-eval task of ``names`` reads, per leaf task (groups and tags
    expanded) as ``{"path", "name", "data_files"}``, read from the task index alone: no
    dataset is loaded. A Python-defined task whose config names no dataset is left out."""
    from lm_eval.tasks._index import Kind

    manager = manager or _manager_for(names)
    index = manager.task_index
    out: dict[str, dict] = {}
    seen: set[str] = set()

    def leaf(name: str, cfg: dict) -> None:
        path = cfg.get("dataset_path")
        if isinstance(path, str):
            files = (cfg.get("dataset_kwargs") or {}).get("data_files")
            out[name] = {"path": path, "name": cfg.get("dataset_name"), "data_files": files}

    def walk(item) -> None:
        if isinstance(item, dict):  # a group member given inline
            if "dataset_path" in item:
                leaf(str(item.get("task", "?")), item)
            elif isinstance(item.get("task"), str):
                walk(item["task"])
            return
        if not isinstance(item, str) or item in seen:
            return
        seen.add(item)
        entry = index.get(item)
        if entry is None:
            return
        if entry.kind == Kind.GROUP:
            members = (entry.cfg or {}).get("task") or []
            for member in members if isinstance(members, list) else [members]:
                walk(member)
        elif entry.kind == Kind.TAG:
            members = [n for n, e in index.items() if item in e.tags and e.kind != Kind.TAG]
            for member in members or sorted(entry.tags):
                walk(member)
        else:
            leaf(item, entry.cfg or {})

    for name in names:
        walk(name)
    return out


def _dataset_cached(path: str, name: str | None) -> bool:
    from datasets import config

    from trl_plus.model_refs import hub_cached

    if hub_cached(path, "dataset") and not name:
        return True
    prepared = Path(config.HF_DATASETS_CACHE) / path.replace("/", "___")
    if name:
        return (prepared / name).is_dir() or hub_cached(path, "dataset")
    return prepared.is_dir()


def _hub_problem(path: str) -> str | None:
    """Why hub dataset ``path`` (not in the local cache) cannot be loaded now, or None:
    the hub answers that it has it."""
    import os

    from trl_plus.model_refs import hub_offline

    if hub_offline() or os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "is not in the local cache and the hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().dataset_info(path, timeout=10)
    except GatedRepoError:
        return "is gated on the hub: accept its terms on its page and log in (hf auth login)"
    except RepositoryNotFoundError:
        return "is not on the hub (or is private)"
    except Exception as exc:  # no connection, proxy, DNS, server error: all say the same here
        return f"is not in the local cache, and the hub could not be reached ({type(exc).__name__})"
    return None


def check_tasks(tasks: list[str]) -> None:
    """Before any model loads or any completion is drawn: every lm-eval task named is
    known, and the data of each can be loaded (local ``data_files`` exist; a hub dataset
    is in the local cache, or the hub has it: asked once per dataset). Raises
    :class:`RecipeError` under ``eval.tasks`` naming the task, its dataset, and how to
    cache it or use the offline pack."""
    names = expand_tasks(list(tasks))
    if not names:
        return
    manager = _manager_for(names)
    _check_known(names, manager)
    uncached: dict[str, list[tuple[str, str | None]]] = {}  # hub dataset -> [(task, config)] not cached
    for task, data in task_datasets(names, manager).items():
        files = data["data_files"]
        if data["path"] in _FILE_BUILDERS or files:
            listed = files.values() if isinstance(files, dict) else files if isinstance(files, list) else [files]
            missing = [f for f in listed if isinstance(f, str) and "://" not in f and not Path(f).exists()]
            if missing:
                raise RecipeError(f"lm-eval task {task!r} reads {missing[0]!r}, which does not exist", "eval.tasks")
        elif not (Path(data["path"]).expanduser().exists() or _dataset_cached(data["path"], data["name"])):
            uncached.setdefault(data["path"], []).append((task, data["name"]))
    for path, missing in uncached.items():
        problem = _hub_problem(path)
        if problem is None:
            continue
        (task, name), more = missing[0], len(missing) - 1
        config_arg = f", {name!r}" if name else ""
        raise RecipeError(
            f"lm-eval task {task!r}{f' (and {more} more)' if more else ''} needs hub dataset {path!r}"
            f"{f' ({name})' if name else ''}, which {problem}; cache it once with the hub in reach (python -c "
            f"\"import datasets; datasets.load_dataset({path!r}{config_arg})\"), or use the shipped offline pack "
            f"(--tasks {OFFLINE_PACK})",
            "eval.tasks",
        )


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
    manager = _manager_for(names)
    _check_known(names, manager)
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
