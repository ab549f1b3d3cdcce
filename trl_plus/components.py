"""Building components from recipe specs, and the core's use of them.

A spec is ``{"name": ..., **kwargs}`` (a bare name is ``{"name": name}``), or an
already-built instance. Reward specs also take the core keys ``weight``, ``normalize``
and ``alias`` (the name the source's scores are logged under).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .data.filters import FilterChain
from .errors import ComponentError, RecipeError, RecipeProblems, RewardSourceError, UnknownComponentError
from .protocols import Judge, KLSchedule, RewardSource
from .registry import STATIC_CHECK, imports_allowed
from .reward_checks import REF_ATTRIBUTE, checked_scores, interrupted_in, source_name

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

    def state(self) -> dict:
        """What a checkpoint keeps, so that a resumed run goes on normalising where it was."""
        return {"n": self.n, "mean": self.mean, "m2": self.m2}

    def load_state(self, state: Mapping) -> None:
        self.n, self.mean, self.m2 = int(state["n"]), float(state["mean"]), float(state["m2"])


@dataclass
class RewardScores:
    total: list[float | None]
    per_source: dict[str, list[float | None]]


@dataclass
class _Source:
    label: str
    fn: RewardSource
    weight: float = 1.0
    norm: RunningNorm | None = None
    key: str = ""  # how errors name it (set by RewardMix): recipe key and label ...
    name: str = ""  # ... and what it is


class RewardMix:
    """Several reward sources combined: a weighted sum, each optionally normalised.

    Callable like a reward source itself, so it plugs in wherever one is expected.
    Every answer is checked (``reward_checks``): one number or None per completion. A
    pair on which every source has no opinion (None) gets None.

    :param where: the recipe key of the list of sources (``rewards``), for errors.
    """

    def __init__(self, sources: Sequence[_Source], where: str = "rewards"):
        labels = [s.label for s in sources]
        dupes = {label for label in labels if labels.count(label) > 1}
        if dupes:
            raise RecipeError(f"two reward sources log under the same name {sorted(dupes)}: give one an 'alias'", where)
        self.sources = list(sources)
        for i, src in enumerate(self.sources):
            src.key = src.key or source_name(f"{where}[{i}]", src.label, src.fn, with_ref=False)
            src.name = src.name or source_name(f"{where}[{i}]", src.label, src.fn)
        self.__name__ = "+".join(labels) or "reward"

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.sources]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def _call(self, src: _Source, prompts, completions, columns):
        start = time.monotonic()
        try:
            return src.fn(prompts, completions, **columns)
        except (KeyboardInterrupt, SystemExit) as exc:  # a signal while it ran (or its own sys.exit): name it
            raise interrupted_in(src.name, exc, time.monotonic() - start) from None
        except RewardSourceError as exc:
            if str(exc).startswith("reward source "):
                raise
            ref = getattr(src.fn, REF_ATTRIBUTE, None)
            said = isinstance(ref, str) and ref.partition(": ")[2] in str(exc)  # it named its endpoint itself
            raise RewardSourceError(f"reward source {src.key if said else src.name}: {exc}") from exc
        except Exception as exc:
            raise RewardSourceError(f"reward source {src.name} raised: {exc!r}") from exc

    def score_source(self, index: int, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        """The scores of source ``index`` alone, checked (and normalised where it asks): its
        part of :meth:`score`, for a trainer that calls each source as its own reward function."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        src = self.sources[index]
        clean = checked_scores(src.name, self._call(src, prompts, completions, columns), completions)
        if src.norm is not None:
            src.norm.update([v for v in clean if v is not None])
            clean = [None if v is None else src.norm(v) for v in clean]
        return clean

    def score(self, prompts: list[str], completions: list[str], **columns) -> RewardScores:
        per_source = {src.label: self.score_source(i, prompts, completions, **columns)
                      for i, src in enumerate(self.sources)}
        total = []
        for i in range(len(completions)):
            parts = [(src.weight, per_source[src.label][i]) for src in self.sources]
            parts = [w * v for w, v in parts if v is not None]
            total.append(sum(parts) if parts else None)
        return RewardScores(total, per_source)

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        return self.score(prompts, completions, **columns).total


class CheckedSchedule:
    """A KL schedule whose every value is checked: finite and > 0 (or >= 0 where ``allow_zero``)."""

    allow_zero = False  # PPO sets it: kl_coef 0 is no KL penalty; DPO's beta must stay > 0

    def __init__(self, label: str, fn: KLSchedule):
        self.label, self.fn = label, fn

    def __call__(self, step: int, stats: Mapping[str, float]) -> float:
        try:
            value = float(self.fn(step, stats))
        except Exception as exc:
            raise ComponentError(f"KL schedule {self.label!r} raised at step {step}: {exc!r}") from exc
        if not math.isfinite(value) or value < 0 or (value == 0 and not self.allow_zero):
            bound = ">= 0" if self.allow_zero else "> 0"
            raise ComponentError(f"KL schedule {self.label!r} returned {value} at step {step}; it must be finite and {bound}")
        return value


class _NeedsRun(Exception):
    """A factory used the run's tokenizer at a dry run, before any model has loaded."""


class _NoTokenizer:
    """The run's tokenizer at a dry run: a factory that stores it builds, one that uses it
    in its constructor is checked no further than its keywords."""

    def __getattr__(self, name):
        raise _NeedsRun(name)

    def __call__(self, *args, **kwargs):
        raise _NeedsRun("__call__")


class _Unbuilt:
    """What a dry run returns for a component it checked but did not build."""

    def __init__(self, name: str):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise ComponentError(f"component {self.__name__!r} was only checked (a dry run), not built")


def _rekeyed(exc: RecipeError, where: str, keywords: Sequence[str]) -> RecipeError:
    """``exc`` under the recipe key that built the component: a component raises without a
    key (``kl``), or with one of its own keywords (``target`` -> ``kl.target``)."""
    key = exc.key
    if isinstance(exc, RecipeProblems) or (key and (key == where or key.startswith((f"{where}.", f"{where}[")))):
        return exc
    if key in keywords or (key and re.split(r"[.\[]", key)[0] in keywords):  # kwargs.chars -> rewards[0].kwargs.chars
        where, message = f"{where}.{key}", str(exc).removeprefix(f"{key}: ")
    else:  # no key, or the key of a component it built in turn: kept in the message
        message = str(exc)
    cls = type(exc) if type(exc) in (RecipeError, UnknownComponentError) else RecipeError
    return cls(message, where)


class Components:
    """Builds components by spec from the registries; context is injected where asked.

    ``problems`` makes it a dry run (recipe validation, before any model loads): every
    component is built, except one that takes a ``model`` (a reward model, a judge
    model), whose keywords are checked and whose model must exist (a local folder, a
    ``tiny:`` name or a hub id) without loading it; a factory that uses the run's
    tokenizer in its constructor is checked by its keywords only. An error is recorded
    in ``problems`` under the recipe key of the component that raised it, and the dry
    run goes on to the next component.
    """

    def __init__(self, hooks, problems=None, **context):
        self.hooks = hooks
        self.problems = problems
        self._depth = 0  # > 0 while a factory runs: what it builds in turn raises to it
        if problems is not None:
            context.setdefault("tokenizer", _NoTokenizer())
        self.context = {"components": self, **context}

    @property
    def dry_run(self) -> bool:
        return self.problems is not None

    def _guard(self, where: str, build):
        """``build()``; at the top of a dry run, an error is recorded and None returned."""
        if not self.dry_run or self._depth:
            return build()
        try:
            return build()
        except Exception as exc:
            self.problems.add_error(where, exc)
            return None

    def _create(self, registry, spec: Any, where: str, core_keys: Sequence[str] = ()):
        name, kwargs, _ = split_spec(spec, where, core_keys)
        info = registry.check_kwargs(name, kwargs, where)
        required, optional, _ = info.keywords()
        if self.dry_run and "model" in required + optional:
            from .model_refs import resolve_model_ref

            if kwargs.get("model") is not None:
                resolve_model_ref(kwargs["model"], f"{where}.model", lookup=False)
            return _Unbuilt(name)
        # trl-plus validate --no-import: a factory that would import what the recipe names
        # (a python reward's module) is checked by its static check instead of being called.
        static = getattr(info.factory, STATIC_CHECK, None) if self.dry_run and not imports_allowed() else None
        self._depth += 1
        try:
            if static is not None:
                static(**kwargs)
                return _Unbuilt(name)
            return registry.create(name, kwargs, where, self.context)
        except _NeedsRun:
            if not self.dry_run:
                raise
            return _Unbuilt(name)
        except RecipeError as exc:
            raise _rekeyed(exc, where, required + optional) from None
        finally:
            self._depth -= 1

    def reward_source(self, spec: Any, where: str = "rewards") -> RewardSource | None:
        if callable(spec) and not isinstance(spec, (str, Mapping)):
            return spec
        return self._guard(where, lambda: self._create(self.hooks.reward_sources, spec, where, REWARD_CORE_KEYS))

    def _mix_source(self, spec: Any, where: str) -> _Source:
        if callable(spec) and not isinstance(spec, (str, Mapping)):
            return _Source(getattr(spec, "__name__", type(spec).__name__), spec)
        name, _, core = split_spec(spec, where, REWARD_CORE_KEYS)
        weight = core.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
            raise RecipeError(f"weight must be a number, got {weight!r}", f"{where}.weight")
        norm = RunningNorm() if core.get("normalize") else None
        fn = self._create(self.hooks.reward_sources, spec, where, REWARD_CORE_KEYS)
        return _Source(core.get("alias") or name, fn, float(weight), norm)

    def reward_mix(self, specs: Sequence[Any] | None, where: str = "rewards") -> RewardMix | None:
        if not specs:
            return None
        sources = [self._guard(f"{where}[{i}]", lambda i=i, s=s: self._mix_source(s, f"{where}[{i}]"))
                   for i, s in enumerate(specs)]
        return self._guard(where, lambda: RewardMix([s for s in sources if s is not None], where))

    def kl_schedule(self, spec: Any, where: str = "kl") -> CheckedSchedule | None:
        if spec is None:
            return None
        if callable(spec) and not isinstance(spec, (str, Mapping)):
            return CheckedSchedule(getattr(spec, "__name__", type(spec).__name__), spec)

        def build():
            return CheckedSchedule(split_spec(spec, where)[0], self._create(self.hooks.kl_schedules, spec, where))

        return self._guard(where, build)

    def filter_chain(self, specs: Sequence[Any] | None, where: str = "filters") -> FilterChain:
        built = []
        for i, spec in enumerate(specs or []):
            loc = f"{where}[{i}]"
            if callable(spec) and not isinstance(spec, (str, Mapping)):
                built.append((getattr(spec, "__name__", type(spec).__name__), spec))
                continue
            fn = self._guard(loc, lambda spec=spec, loc=loc: self._create(self.hooks.data_filters, spec, loc))
            if fn is not None:
                built.append((split_spec(spec, loc)[0], fn))
        return FilterChain(built)

    def judge(self, spec: Any, where: str = "eval.judges") -> Judge | None:
        if callable(spec) and not isinstance(spec, (str, Mapping)):
            return spec
        return self._guard(where, lambda: self._create(self.hooks.judges, spec, where))
