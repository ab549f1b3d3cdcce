"""Building components from recipe specs, and the core's use of them.

A spec is ``{"name": ..., **kwargs}`` (a bare name is ``{"name": name}``), or an
already-built instance. Reward specs also take the core keys ``weight``, ``normalize``
and ``alias`` (the name the source's scores are logged under).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ComponentError, RecipeError, RewardSourceError

REWARD_CORE_KEYS = ("weight", "normalize", "alias")


def split_spec(spec: Any, where: str, core_keys: Sequence[str] = ()) -> tuple[str, dict, dict]:
    """(name, component kwargs, core kwargs) of a spec."""
    if isinstance(spec, str):
        return spec, {}, {}
    if not isinstance(spec, Mapping):
        raise RecipeError(f"expected a mapping with a 'name' key, got {spec!r}", where)
    if "name" not in spec:
        raise RecipeError(f"missing 'name' in {dict(spec)!r}", where)
    kwargs = {k: v for k, v in spec.items() if k != "name" and k not in core_keys}
    core = {k: spec[k] for k in core_keys if k in spec}
    return spec["name"], kwargs, core


class RunningNorm:
    """Running mean/std (Welford) so a source's scores are normalised over the whole run."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: Sequence[float]) -> None:
        for v in values:
            self.n += 1
            delta = v - self.mean
            self.mean += delta / self.n
            self.m2 += delta * (v - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 1.0

    def __call__(self, value: float) -> float:
        return (value - self.mean) / max(self.std, 1e-8)


@dataclass
class RewardScores:
    total: list[float | None]
    per_source: dict[str, list[float | None]]


@dataclass
class _Source:
    label: str
    fn: Any
    weight: float = 1.0
    norm: RunningNorm | None = None


class RewardMix:
    """Several reward sources combined: a weighted sum, each optionally normalised.

    Callable like a reward source itself, so it plugs in wherever one is expected.
    A pair on which every source has no opinion (None) gets None.
    """

    def __init__(self, sources: Sequence[_Source]):
        labels = [s.label for s in sources]
        dupes = {label for label in labels if labels.count(label) > 1}
        if dupes:
            raise RecipeError(f"two reward sources log under the same name {sorted(dupes)}: give one an 'alias'", "rewards")
        self.sources = list(sources)
        self.__name__ = "+".join(labels) or "reward"

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.sources]

    def score(self, prompts: list[str], completions: list[str], **columns) -> RewardScores:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        per_source = {}
        for src in self.sources:
            try:
                scores = src.fn(prompts, completions, **columns)
            except RewardSourceError:
                raise
            except Exception as exc:
                raise RewardSourceError(f"reward source {src.label!r} raised: {exc!r}") from exc
            scores = list(scores) if scores is not None else None
            if scores is None or len(scores) != len(completions):
                got = "None" if scores is None else f"{len(scores)} scores"
                raise RewardSourceError(
                    f"reward source {src.label!r} returned {got} for {len(completions)} completions"
                )
            clean = []
            for i, s in enumerate(scores):
                if s is None:
                    clean.append(None)
                    continue
                try:
                    value = float(s)
                except (TypeError, ValueError):
                    raise RewardSourceError(f"reward source {src.label!r} returned {s!r} for completion {i}") from None
                if not math.isfinite(value):
                    raise RewardSourceError(
                        f"reward source {src.label!r} returned {value} for completion {i} "
                        f"(completion: {completions[i][:80]!r}); return None for 'no opinion'"
                    )
                clean.append(value)
            if src.norm is not None:
                src.norm.update([v for v in clean if v is not None])
                clean = [None if v is None else src.norm(v) for v in clean]
            per_source[src.label] = clean
        total = []
        for i in range(len(completions)):
            parts = [(src.weight, per_source[src.label][i]) for src in self.sources]
            parts = [w * v for w, v in parts if v is not None]
            total.append(sum(parts) if parts else None)
        return RewardScores(total, per_source)

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        return self.score(prompts, completions, **columns).total


class CheckedSchedule:
    """A KL schedule whose every value is checked: finite and > 0."""

    def __init__(self, label: str, fn: Any):
        self.label, self.fn = label, fn

    def __call__(self, step: int, stats: Mapping[str, float]) -> float:
        try:
            value = float(self.fn(step, stats))
        except Exception as exc:
            raise ComponentError(f"KL schedule {self.label!r} raised at step {step}: {exc!r}") from exc
        if not math.isfinite(value) or value <= 0:
            raise ComponentError(f"KL schedule {self.label!r} returned {value} at step {step}; it must be finite and > 0")
        return value


@dataclass
class _FilterCount:
    name: str
    rows_in: int = 0
    dropped: int = 0
    examples: list = field(default_factory=list)


def _short(row: Mapping[str, Any], limit: int = 200) -> dict:
    out = {}
    for k, v in row.items():
        text = v if isinstance(v, str) else json.dumps(v, default=str)
        out[k] = text if len(text) <= limit else text[:limit] + "..."
    return out


def _reasons(fn) -> dict:
    """A filter's own breakdown of its drops (a ``reasons`` dict of counts), if it keeps one."""
    reasons = getattr(fn, "reasons", None)
    return {"reasons": dict(reasons)} if isinstance(reasons, dict) else {}


class FilterChain:
    """Filters applied in order, counting what each one drops (for the filter report)."""

    def __init__(self, filters: Sequence[tuple[str, Any]], max_examples: int = 3):
        self.filters = list(filters)
        self.max_examples = max_examples
        self.counts = [_FilterCount(label) for label, _ in self.filters]
        self.rows_in = 0
        self.rows_out = 0

    def __bool__(self) -> bool:
        return bool(self.filters)

    def _keep(self, index: int, batch: dict[str, list]) -> list[bool]:
        label, fn = self.filters[index]
        n = len(next(iter(batch.values()))) if batch else 0
        try:
            keep = fn(batch)
        except ComponentError:
            raise
        except KeyError as exc:
            raise ComponentError(f"data filter {label!r} needs column {exc} (columns: {sorted(batch)})") from exc
        except Exception as exc:
            raise ComponentError(f"data filter {label!r} raised: {exc!r}") from exc
        keep = list(keep)
        if len(keep) != n:
            raise ComponentError(f"data filter {label!r} returned {len(keep)} decisions for {n} rows")
        return [bool(k) for k in keep]

    def mask(self, batch: dict[str, list]) -> list[bool]:
        """Keep/drop per row of one batch, every filter applied, counts updated."""
        n = len(next(iter(batch.values()))) if batch else 0
        self.rows_in += n
        alive = list(range(n))
        for i, count in enumerate(self.counts):
            if not alive:
                break
            sub = {k: [v[j] for j in alive] for k, v in batch.items()}
            keep = self._keep(i, sub)
            count.rows_in += len(alive)
            for j, k in zip(alive, keep):
                if not k:
                    count.dropped += 1
                    if len(count.examples) < self.max_examples:
                        count.examples.append(_short({key: batch[key][j] for key in batch}))
            alive = [j for j, k in zip(alive, keep) if k]
        self.rows_out += len(alive)
        kept = set(alive)
        return [j in kept for j in range(n)]

    def apply_to_dataset(self, dataset, batch_size: int = 1000):
        """The rows of a ``datasets.Dataset`` that every filter keeps.

        One pass of ``Dataset.filter(batched=True)`` in this process (filters may keep
        state across batches, as dedup does), never read back from a cache: the counts
        must come from this run."""
        if not self.filters or len(dataset) == 0:
            return dataset
        from datasets.fingerprint import generate_random_fingerprint

        kept = dataset.filter(
            self.mask, batched=True, batch_size=batch_size, load_from_cache_file=False, keep_in_memory=True,
            new_fingerprint=generate_random_fingerprint(),
        )
        return kept if len(kept) < len(dataset) else dataset

    def report(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "filters": [
                {"name": c.name, "rows_in": c.rows_in, "dropped": c.dropped, **_reasons(fn), "examples": c.examples}
                for c, (_, fn) in zip(self.counts, self.filters)
            ],
        }

    def write_report(self, path: str | Path, **extra) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**self.report(), **extra}, indent=2))


class Components:
    """Builds components by spec from the registries; context is injected where asked."""

    def __init__(self, hooks, **context):
        self.hooks = hooks
        self.context = {"components": self, **context}

    def reward_source(self, spec: Any, where: str = "rewards"):
        if callable(spec) and not isinstance(spec, (str, Mapping)):
            return spec
        name, kwargs, _ = split_spec(spec, where, REWARD_CORE_KEYS)
        return self.hooks.reward_sources.create(name, kwargs, where, self.context)

    def reward_mix(self, specs: Sequence[Any] | None, where: str = "rewards") -> RewardMix | None:
        if not specs:
            return None
        sources = []
        for i, spec in enumerate(specs):
            loc = f"{where}[{i}]"
            if callable(spec) and not isinstance(spec, (str, Mapping)):
                label = getattr(spec, "__name__", type(spec).__name__)
                sources.append(_Source(label, spec))
                continue
            name, _, core = split_spec(spec, loc, REWARD_CORE_KEYS)
            weight = core.get("weight", 1.0)
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
                raise RecipeError(f"weight must be a number, got {weight!r}", f"{loc}.weight")
            label = core.get("alias") or name
            norm = RunningNorm() if core.get("normalize") else None
            sources.append(_Source(label, self.reward_source(spec, loc), float(weight), norm))
        return RewardMix(sources)

    def kl_schedule(self, spec: Any, where: str = "kl") -> CheckedSchedule | None:
        if spec is None:
            return None
        if callable(spec) and not isinstance(spec, (str, Mapping)):
            return CheckedSchedule(getattr(spec, "__name__", type(spec).__name__), spec)
        name, kwargs, _ = split_spec(spec, where)
        return CheckedSchedule(name, self.hooks.kl_schedules.create(name, kwargs, where, self.context))

    def filter_chain(self, specs: Sequence[Any] | None, where: str = "filters") -> FilterChain:
        built = []
        for i, spec in enumerate(specs or []):
            loc = f"{where}[{i}]"
            if callable(spec) and not isinstance(spec, (str, Mapping)):
                built.append((getattr(spec, "__name__", type(spec).__name__), spec))
                continue
            name, kwargs, _ = split_spec(spec, loc)
            built.append((name, self.hooks.data_filters.create(name, kwargs, loc, self.context)))
        return FilterChain(built)

    def judge(self, spec: Any, where: str = "eval.judges"):
        if callable(spec) and not isinstance(spec, (str, Mapping)):
            return spec
        name, kwargs, _ = split_spec(spec, where)
        return self.hooks.judges.create(name, kwargs, where, self.context)
