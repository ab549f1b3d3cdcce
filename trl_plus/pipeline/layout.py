"""The run folder's layout: what every stage writes where, and how it is read back.

One sub-folder per stage (and per run of a sweep), each finished by a ``done.json``
marker written last, so an interrupted pipeline resumes where it stopped. A marker
records what the step cost (wall time, peak memory, tokens) and a fingerprint of its
configuration and of everything upstream: a step whose fingerprint changed is redone,
one whose marker matches is skipped.

A folder can hold more than the recipe now being run asks for (runs of a beta no longer
in the sweep, a seed trained at another learning rate): ``plan.json`` records what the
current recipe names, each step with the fingerprint it asks for. Everything that reads
the folder back (the eval summary, the report) takes only what the plan names and whose
marker matches it (:class:`Plan`); the rest stays on disk and is listed as left out.

Every stage and the report read the folder through this module: none of them reads
another stage's module to find a file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ..run_folder.compute import read_compute

DONE = "done.json"
STARTED = "started.json"
PLAN = "plan.json"  # what the recipe now being run names (see Plan)
LOCK = "compare.lock"  # held by the pipeline run that uses the folder
SUMMARY = "pipeline.json"  # wall time and skipped steps of the last pipeline run
# What the pipeline writes at the top of its run folder: a folder that holds one of these
# and is not a run folder of ours is refused (its files would be overwritten or wiped).
STAGE_DIRS = ("corpus", "sft", "pairs", "reward", "ppo", "ppo_gt", "dpo", "eval", "report")
RUN_ENTRIES = ("recipe.yaml", "recipe.resolved.yaml", PLAN, SUMMARY, *STAGE_DIRS)
POLICY_DIRS = ("ppo", "ppo_gt", "dpo")
# The longest path a run writes below its folder (eval/<method>/<run>/step-N/val/eval.json,
# <method>/<run>/checkpoint-N/<file>), with room to spare: checked against the OS limit.
RELATIVE_MARGIN = 128

VAL_PROMPTS = "val_prompts.jsonl"  # in corpus/: the generated validation prompts
TEST_PROMPTS = "eval_prompts.jsonl"  # in corpus/: the generated test prompts
HELDOUT_SCORES = "heldout_scores.json"  # in reward/: RM and gold scores of the held-out pairs
VAL_DIR = "val"  # eval/<point>/val/eval.json: gold reward on the validation prompts
PROXY_FILE = "proxy.json"  # eval/<point>/proxy.json: reward-model scores of the test completions
BON_DIR = "best_of_n"  # eval/best_of_n/best_of_n.json


# -- reading and writing ------------------------------------------------------------------


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def write_json(path: Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def reward_model_spec(folder: Path) -> dict:
    """The reward source PPO optimises: the learned RM in ``folder`` (the run folder's
    ``reward/``), rescaled to the gold reward's spread (the weight its marker records)."""
    info = read_json(Path(folder) / DONE, {})
    return {"name": "reward_model", "model": str(folder), "append_eos": True,
            "batch_size": 128, "weight": float(info.get("weight", 1.0)), "alias": "reward_model"}


# -- what the recipe names: plan.json ------------------------------------------------------


class Plan:
    """``plan.json``: what the recipe now being run asks of its run folder.

    ``stages`` (the stages it names), ``runs`` (every policy run of its sweep, ``rel``),
    ``steps`` (each step's fingerprint as the recipe asks it, recorded when the pipeline
    reaches the step), ``points`` (every checkpoint to evaluate, ``id -> fingerprint``,
    recorded when the eval stage starts). A step is *current* when its marker on disk
    carries the fingerprint the plan recorded: only current steps are read back.
    """

    def __init__(self, root: Path, data: dict):
        self.root = Path(root)
        self.data = data

    @classmethod
    def read(cls, root: str | Path) -> Plan | None:
        """The folder's plan; None for a folder written before plans existed.

        :raises DataError: a ``plan.json`` that cannot be read: without it nothing says which
            runs the recipe names, and reading every run on disk would mix experiments.
        """
        from ..errors import DataError

        path = Path(root) / PLAN
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            data, why = None, str(exc)
        else:
            why = "not a plan"
        ok = (isinstance(data, dict) and isinstance(data.get("runs"), list) and isinstance(data.get("steps"), dict)
              and isinstance(data.get("points"), (dict, type(None))))
        if not ok:
            raise DataError(f"{path} is damaged ({why}): it records which runs the folder's recipe names; run the "
                            f"recipe again with `trl-plus compare RECIPE --out {Path(root)}` (finished steps are "
                            "reused) to write it anew")
        return cls(Path(root), data)

    @classmethod
    def start(cls, root: Path, recipe_hash: str, stages: list[str], runs: list[str]) -> Plan:
        plan = cls(root, {"version": 1, "recipe_hash": recipe_hash, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                          "finished": None, "stages": list(stages), "runs": list(runs), "steps": {}, "points": None})
        plan.save()
        return plan

    def save(self) -> None:
        write_json(self.root / PLAN, self.data)

    def record(self, rel: str, fp: str) -> None:
        if self.data["steps"].get(rel) != fp:
            self.data["steps"][rel] = fp
            self.save()

    def record_points(self, points: dict[str, str]) -> None:
        self.data["points"] = dict(points)
        self.save()

    def finish(self) -> None:
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.save()

    @property
    def runs(self) -> list[str]:
        return list(self.data.get("runs") or [])

    def _fp(self, rel: str) -> str | None:
        if rel.startswith("eval/") and rel[5:] in (self.data.get("points") or {}):
            return self.data["points"][rel[5:]]
        return (self.data.get("steps") or {}).get(rel)

    def current(self, rel: str) -> bool:
        """Whether ``rel`` is a step of this plan whose marker matches what the plan asks."""
        fp = self._fp(rel)
        if fp is None:
            return False
        info = read_json(self.root / rel / DONE, None)
        return isinstance(info, dict) and info.get("fingerprint") == fp

    def point_current(self, point_id: str) -> bool:
        return point_id in (self.data.get("points") or {}) and self.current(f"eval/{point_id}")

    def status(self) -> dict:
        """What the plan asks that the folder lacks, and what the folder holds that it does not ask.

        ``stages_missing``, ``not_trained`` (runs, each with ``why``), ``not_evaluated``
        (checkpoint ids, or whole runs while the eval stage has not listed them), ``left_out``
        (runs and stages on disk the recipe does not name), ``complete``.
        """
        steps = self.data.get("steps") or {}
        stages_missing = [s for s in self.data.get("stages") or [] if not self.current(s)]
        not_trained = []
        for rel in self.runs:
            if self.current(rel):
                continue
            on_disk = read_json(self.root / rel / DONE, None)
            why = ("on disk from other settings" if on_disk and rel in steps else
                   "interrupted" if (self.root / rel / STARTED).exists() else "not started")
            not_trained.append({"run": rel, "why": why})
        points = self.data.get("points")
        if points is None:
            not_evaluated = [f"{rel}/*" for rel in self.runs] if self.runs else []
        else:
            not_evaluated = [pid for pid in points if not self.current(f"eval/{pid}")]
        extra = [rel for rel in steps if rel not in self.runs and rel not in (self.data.get("stages") or [])
                 and not self.current(rel)]
        return {"complete": not (stages_missing or not_trained or not_evaluated or extra),
                "stages_missing": stages_missing + extra, "not_trained": not_trained,
                "not_evaluated": not_evaluated, "left_out": left_out(self.root, self.runs, self.data.get("stages"))}


def _is_policy_run(folder: Path) -> bool:
    """Whether ``folder`` holds a policy run, finished (its marker names its strength) or begun
    (its start marker records the trainer recipe it trains)."""
    done = read_json(folder / DONE, None)
    if isinstance(done, dict) and "strength_key" in done:
        return True
    started = read_json(folder / STARTED, None)
    return isinstance(started, dict) and isinstance(started.get("settings"), dict) and "trainer" in started["settings"]


def policy_dirs(root: Path) -> list[str]:
    """The folders of policy runs under ``root``: the pipeline's own stages' (``POLICY_DIRS``),
    then every other folder holding a policy run (an arm, named for its trainer kind), or
    evaluated checkpoints of one under ``eval/``."""
    found = list(POLICY_DIRS)
    others = [d for d in (root.iterdir() if root.is_dir() else ()) if d.is_dir() and d.name not in STAGE_DIRS
              and any(_is_policy_run(run) for run in d.iterdir() if run.is_dir())]
    evaluated = root / "eval"
    others += [d for d in (evaluated.iterdir() if evaluated.is_dir() else ()) if d.is_dir()
               and d.name not in (*STAGE_DIRS, "sft", BON_DIR, "summary") and any(d.glob(f"*/*/{DONE}"))]
    return found + sorted({d.name for d in others})


def runs_on_disk(root: Path) -> list[str]:
    """Every policy run folder under ``root`` (trained or begun), as ``method/run``, and every
    run with evaluated checkpoints under ``eval/``."""
    found = set()
    for method in policy_dirs(root):
        if (root / method).is_dir():
            found.update(f"{method}/{d.name}" for d in (root / method).iterdir()
                         if (d / DONE).exists() or (d / STARTED).exists())
        if (root / "eval" / method).is_dir():
            found.update(f"{method}/{d.name}" for d in (root / "eval" / method).iterdir() if any(d.glob(f"*/{DONE}")))
    return sorted(found)


def left_out(root: Path, runs: list[str], stages: list[str] | None = None) -> list[str]:
    """Runs (and stages) in the folder that the plan does not name: kept on disk, never reported."""
    planned = set(runs)
    out = [rel for rel in runs_on_disk(root) if rel not in planned]
    if stages is not None:
        out += [f"{s}/" for s in ("corpus", "reward") if s not in stages and (root / s / DONE).exists()]
    return out


def legacy_status(root: Path) -> dict:
    """What a run folder written before ``plan.json`` existed visibly lacks: runs begun and
    never finished. (Without a plan nothing says which runs its recipe named.)"""
    not_trained = [{"run": rel, "why": "interrupted"} for rel in runs_on_disk(root)
                   if (root / rel / STARTED).exists() and not (root / rel / DONE).exists()]
    return {"complete": not not_trained, "stages_missing": [], "not_trained": not_trained, "not_evaluated": [],
            "left_out": []}


def run_status(root: str | Path) -> dict:
    """The folder's :meth:`Plan.status` (or :func:`legacy_status` without a plan)."""
    plan = Plan.read(root)
    return plan.status() if plan is not None else legacy_status(Path(root))


# -- the evaluated checkpoints -----------------------------------------------------------------


def mean(values) -> float | None:
    """The mean of the values that are not None; None when none is."""
    ok = [v for v in values if v is not None]
    return sum(ok) / len(ok) if ok else None


def _listed(per_prompt, n: int) -> list[float | None] | None:
    """A judge's ``per_prompt`` mapping (prompt index -> score) as a list in prompt order."""
    if per_prompt is None:
        return None
    return [per_prompt.get(str(i)) for i in range(n)]


def _finite(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def checkpoint_compute(path: str | os.PathLike | None) -> dict | None:
    """The compute record a trained checkpoint was saved with (its ``compute.json``: tokens
    generated and trained, passes, FLOPs, wall time so far), or None without one."""
    return read_compute(path)


def point_compute(point: dict, info: dict) -> dict | None:
    """An evaluated point's compute: what its eval marker recorded, else its checkpoint's
    ``compute.json`` if the checkpoint is still there; None for the SFT reference (the
    origin every run's compute counts from) and for a checkpoint saved without a record."""
    if point.get("method") == "sft":
        return None
    recorded = info.get("compute")
    return recorded if isinstance(recorded, dict) else checkpoint_compute(point.get("path"))


def collect_points(root: Path, plan: Plan | None = None) -> list[dict]:
    """Every evaluated checkpoint under ``root/eval`` that the run folder's plan names, as
    one flat record (for the report).

    Only checkpoints of the recipe now being run count: with a ``plan.json`` (``plan``, or
    the folder's own), a point enters when the plan lists it and its marker matches the
    fingerprint the plan asks for (a run of a beta no longer in the sweep, or a seed trained
    with other settings, stays on disk and out of the report). A folder written before
    plans existed gives every point it holds.

    ``kl`` is None where no KL was estimated (never 0: such a point is off the frontier);
    per-prompt gold rewards leave failed scores out (None when every sample of a prompt
    failed), and so do the means. ``compute`` is the training compute of the checkpoint
    (:func:`point_compute`), None where it has no record.
    """
    plan = plan if plan is not None else Plan.read(root)
    points = []
    for marker in sorted(Path(root, "eval").rglob(DONE)):
        info = read_json(marker, {})
        point = info.get("point")
        if not point:
            continue
        if plan is not None and not plan.point_current(point.get("id", "")):
            continue
        result = read_json(marker.parent / "eval.json", {})
        val = read_json(marker.parent / VAL_DIR / "eval.json", {})
        proxy = read_json(marker.parent / PROXY_FILE, None)
        gold = result.get("gold_reward") or {}
        per_prompt = gold.get("per_prompt") or []
        kl = result.get("kl") or {}
        win = next(iter((result.get("win_rates") or {}).values()), None)
        n = (result.get("prompts") or {}).get("count") or len(per_prompt)
        is_ref = point["method"] == "sft"
        val_kl = val.get("kl")
        points.append({
            **point,
            **({"kl_val": 0.0 if is_ref else _finite(val_kl.get("kl"))} if isinstance(val_kl, dict) or is_ref else {}),
            "kl": 0.0 if is_ref else _finite(kl.get("kl")),
            "kl_stderr": kl.get("stderr"),
            # eval.json written before the token estimator holds the log-ratio's, unnamed
            "kl_estimator": (kl.get("estimator") or "sample") if kl else None,
            "kl_samples": kl.get("num_samples"),
            "gold": mean(per_prompt),
            "gold_ci": gold.get("ci"),
            "gold_stderr": gold.get("stderr"),
            "gold_failed": gold.get("failed", 0),
            "gold_per_prompt": per_prompt,
            "gold_val": mean((val.get("gold_reward") or {}).get("per_prompt") or []),
            "gold_val_per_prompt": (val.get("gold_reward") or {}).get("per_prompt"),
            "proxy": None if proxy is None else proxy.get("mean"),
            "proxy_per_prompt": None if proxy is None else proxy.get("per_prompt"),
            "win_rate": None if win is None else {k: win.get(k) for k in (
                "win_rate", "win_rate_ci", "lc_win_rate", "lc_win_rate_ci", "wins", "ties", "losses", "judged")},
            "win_per_prompt": _listed(None if win is None else win.get("per_prompt"), n),
            "lm_eval": result.get("lm_eval"),
            "eval_json": str(marker.parent / "eval.json"),
            "examples": result.get("examples", [])[:3],
            "seeds_used": (result.get("manifest") or {}).get("seeds"),
            "wall_time_s": info.get("wall_time_s"),
            "compute": point_compute(point, info),
        })
    return points
