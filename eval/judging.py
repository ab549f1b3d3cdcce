"""Building judges by name and running them over candidate/reference pairs.

A judge name is a registered judge, or the name of any registered reward source (which
then judges through the ``reward_source`` judge): a third party's reward plugin is a
judge with no extra code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from trl_plus.components import split_spec
from trl_plus.errors import ComponentError, RecipeError, UnknownComponentError
from trl_plus.redact import redact_urls
from trl_plus.registry import did_you_mean

logger = logging.getLogger(__name__)


def normalise_judge_spec(spec: Any, hooks, where: str = "eval.judges") -> dict:
    """``{"name": judge, ...}`` for a judge spec or bare name; reward-source names become
    ``{"name": "reward_source", "source": {...}}``."""
    name, kwargs, _ = split_spec(spec, where)
    if not isinstance(name, str):
        raise RecipeError(f"judge name must be text, got {name!r}", where)
    judges, sources = hooks.judges, hooks.reward_sources
    if name in judges:
        judges.check_kwargs(name, kwargs, where)
        if name == "reward_source":
            source = kwargs.get("source")
            sname, skw, _ = split_spec(source, f"{where}.source")
            sources.check_kwargs(sname, skw, f"{where}.source")
        return {"name": name, **kwargs}
    if name in sources:
        sources.check_kwargs(name, kwargs, where)
        return {"name": "reward_source", "source": {"name": name, **kwargs}}
    choices = judges.names() + sources.names()
    raise UnknownComponentError(
        f"unknown judge {name!r}.{did_you_mean(name, choices)} Judges: {', '.join(judges.names()) or '(none)'}; "
        f"any reward source also judges: {', '.join(sources.names()) or '(none)'}",
        key=where,
    )


def judge_label(spec: Mapping) -> str:
    """A short, secret-free name for a judge in results (``reward_source:python``)."""
    if spec["name"] == "reward_source":
        source = spec.get("source")
        return f"reward_source:{source['name'] if isinstance(source, Mapping) else source}"
    return str(spec["name"])


def public_spec(spec: Any) -> Any:
    """A spec as it may appear in a manifest: keys that hold secrets are left out.

    ``token_env`` names an environment variable, so it stays; a value read from the
    environment is never part of a spec in the first place. Addresses lose their
    ``user:password@`` and token parameters.
    """
    secret = ("token", "api_key", "password", "secret", "authorization")
    if isinstance(spec, Mapping):
        return {k: public_spec(v) for k, v in spec.items() if k.lower() not in secret}
    if isinstance(spec, list):
        return [public_spec(v) for v in spec]
    return redact_urls(spec)


def run_judge(
    judge,
    label: str,
    prompts: Sequence[str],
    completions_a: Sequence[str],
    completions_b: Sequence[str],
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> list[float | None]:
    """The judge's P(A beats B) per pair, in batches, checked: one value per pair, each in
    [0, 1] or None (a failed pair, kept and counted)."""
    from tqdm.auto import tqdm

    n = len(prompts)
    out: list[float | None] = []
    bar = tqdm(total=n, desc=f"judging ({label})", unit="pair", disable=not progress, leave=False)
    try:
        for s in range(0, n, batch_size):
            p, a, b = (list(x[s : s + batch_size]) for x in (prompts, completions_a, completions_b))
            try:
                got = judge(p, a, b)
            except ComponentError:
                raise
            except Exception as exc:
                raise ComponentError(f"judge {label!r} raised: {exc!r}") from exc
            got = list(got) if got is not None else []
            if len(got) != len(p):
                raise ComponentError(f"judge {label!r} returned {len(got)} values for {len(p)} pairs")
            for i, v in enumerate(got):
                if v is None:
                    out.append(None)
                    continue
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    raise ComponentError(f"judge {label!r} returned {v!r} for pair {s + i}") from None
                if math.isnan(v):
                    out.append(None)
                elif not 0.0 <= v <= 1.0:
                    raise ComponentError(
                        f"judge {label!r} returned {v} for pair {s + i}; a judge returns P(A beats B) in [0, 1]"
                    )
                else:
                    out.append(v)
            bar.update(len(p))
    finally:
        bar.close()
    return out


def judge_failures(judge, label: str, probabilities: Sequence[float | None]) -> dict:
    """The failures of one judge's run, for its results and a warning: never dropped silently.

    ``judge_failures`` counts the judge's failed requests (batches a judge such as
    ``http_pairwise`` gave up on after its retries, listed in its ``failures``), with up to
    ten of their reasons in ``failure_reasons``; the failed pairs are counted in ``failed``.
    """
    reasons = [str(r) for r in (getattr(judge, "failures", None) or [])]
    failed = sum(p is None for p in probabilities)
    if failed or reasons:
        first = f": {reasons[0]}" if reasons else ""
        logger.warning("judge %r failed on %d of %d pairs (%d failed requests)%s",
                       label, failed, len(probabilities), len(reasons), first)
    out: dict = {"judge_failures": len(reasons)}
    if reasons:
        out["failure_reasons"] = reasons[:10]
    return out
