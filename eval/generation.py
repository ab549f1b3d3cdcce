"""Batched sampling from a checkpoint on a prompt set, cached on disk.

Prompts are sorted by length and left-padded, so a batch wastes little compute and
every row's last prompt token sits at the same position. A cache file
(``generations.jsonl``) keyed by model, prompt-set hash, sampling settings and seed
means a re-run, or scoring with a new judge, never samples again.

Each model samples from its own random stream: the seed actually used is derived from the
model's identity, the configured seed and a stream name (:func:`sample_seed`), so a
candidate close to its reference does not replay the reference's completions, while the
same model under the same settings always draws the same ones (and hits the cache).

Sampling is from the model's own distribution, changed only by the settings' temperature
and top-p (:mod:`trl_plus.eval.generation_settings` says why and how).

The parts live by concern: the settings and the neutral generation config in
:mod:`.generation_settings`, loading a checkpoint and its id in :mod:`.checkpoints`, batched
sampling in :mod:`.sampling`, the cache in :mod:`.generation_cache`; this module puts them
together (:func:`sample_completions`, :func:`generate`) and names them all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoints import Policy, checkpoint_id, fingerprint, load_policy
from .generation_cache import SAMPLING_RULE, cache_key, cache_lookup, cache_store, prompts_hash
from .generation_settings import (
    FIELDS,
    KEPT_FROM_CHECKPOINT,
    NEUTRAL_GENERATION,
    GenerationSettings,
    check_neutral_generation,
    evaluation_generation,
    evaluation_generation_config,
    samples_own_distribution,
)
from .sampling import (
    DEFAULT_STREAM,
    cut_at_eos,
    decode,
    encode_prompts,
    eos_ids_of,
    left_pad,
    sample_seed,
    sample_token_ids,
)

__all__ = [
    "DEFAULT_STREAM",
    "FIELDS",
    "KEPT_FROM_CHECKPOINT",
    "NEUTRAL_GENERATION",
    "SAMPLING_RULE",
    "Completions",
    "GenerationSettings",
    "Policy",
    "cache_key",
    "cache_lookup",
    "cache_store",
    "check_neutral_generation",
    "checkpoint_id",
    "cut_at_eos",
    "decode",
    "encode_prompts",
    "eos_ids_of",
    "evaluation_generation",
    "evaluation_generation_config",
    "fingerprint",
    "generate",
    "left_pad",
    "load_policy",
    "prompts_hash",
    "sample_completions",
    "sample_seed",
    "sample_token_ids",
    "samples_own_distribution",
]


@dataclass
class Completions:
    """What :func:`sample_completions` returns: the decoded completions (prompt-major) with
    the token ids they were decoded from and the seed they were sampled with."""

    texts: list[str]
    token_ids: list[list[int]] | None  # None: a cache row written before ids were kept
    seed: int
    model_id: str | None
    logprobs: list[float] | None = None  # each completion's log-prob under the model, when sampling kept it
    # each completion's next-token log-softmax at its positions, when asked for and sampled
    # here (never cached: a cache hit leaves it None)
    distributions: list | None = None


def sample_completions(
    model_or_path: Any,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    cache_path: str | Path | None = None,
    *,
    tokenizer: Any = None,
    model_id: str | None = None,
    hooks=None,
    progress: bool | str = True,
    derive_seed: bool = True,
    stream: str = DEFAULT_STREAM,
    keep_distributions: bool = False,
) -> Completions:
    """:func:`generate`, keeping the completions' token ids (decoding and re-encoding text
    does not give them back exactly) and the seed used; with ``keep_distributions``, also
    the model's next-token distributions along each completion when they are sampled here
    from the model's own distribution (see ``distributions_out`` of :func:`sample_token_ids`)."""
    settings = settings or GenerationSettings()
    prompts = list(prompts)
    if model_id is None and isinstance(model_or_path, (str, os.PathLike)):
        model_id = checkpoint_id(model_or_path)
    if model_id is None and isinstance(model_or_path, Policy):
        model_id = model_or_path.model_id
    seed = sample_seed(model_id, settings.seed, stream) if derive_seed else settings.seed
    if not prompts:
        return Completions([], [], seed, model_id)
    # keyed by what is actually sampled: the seed in use, not the configured one
    used = settings.replace(seed=seed)
    sha = prompts_hash(prompts)
    key = cache_key("generations", model_id, sha, used) if model_id else None
    if key:
        hit = cache_lookup(cache_path, key)
        if hit is not None:
            return Completions(hit["completions"], hit.get("token_ids"), seed, model_id, hit.get("logprobs"))
    policy = load_policy(model_or_path, tokenizer=tokenizer, hooks=hooks, model_id=model_id)
    logprobs: list[float] = []
    distributions: list | None = [] if keep_distributions else None
    ids = sample_token_ids(policy, encode_prompts(policy.tokenizer, prompts), used, progress=progress,
                           logprobs_out=logprobs, distributions_out=distributions)
    completions = decode(policy.tokenizer, ids)
    if key:
        cache_store(
            cache_path,
            {"key": key, "kind": "generations", "model": model_id, "prompts_sha256": sha,
             "settings": used.to_dict(), "seed": seed, "configured_seed": settings.seed, "stream": stream,
             "completions": completions, "token_ids": ids, **({"logprobs": logprobs} if logprobs else {})},
        )
    return Completions(completions, ids, seed, model_id, logprobs or None, distributions or None)


def generate(
    model_or_path: Any,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    cache_path: str | Path | None = None,
    *,
    tokenizer: Any = None,
    model_id: str | None = None,
    hooks=None,
    progress: bool | str = True,
    derive_seed: bool = True,
    stream: str = DEFAULT_STREAM,
) -> list[str]:
    """Completions for ``prompts``: ``settings.num_samples`` per prompt, prompt-major.

    ``model_or_path`` is a checkpoint name/path, a :class:`Policy`, or an in-memory
    model (with ``tokenizer``; cached only when ``model_id`` is given). With
    ``cache_path``, a hit returns the stored completions without loading anything.

    With ``derive_seed`` (the default) the sampling seed is
    ``sample_seed(model identity, settings.seed, stream)``, not ``settings.seed`` itself:
    two models never share a random stream, and calling ``generate(checkpoint, prompts,
    settings, cache)`` gives exactly the completions :func:`evaluate_checkpoint` judged
    for that checkpoint as the candidate (a cache hit when they share the cache file).
    ``derive_seed=False`` samples with ``settings.seed`` as given; ``stream`` names
    another stream of the same model (the harness samples reference checkpoints from
    ``"reference"``).
    """
    return sample_completions(
        model_or_path, prompts, settings, cache_path, tokenizer=tokenizer, model_id=model_id, hooks=hooks,
        progress=progress, derive_seed=derive_seed, stream=stream,
    ).texts
