"""Sequence-level KL(pi || pi_ref), estimated by Monte Carlo from the policy's own samples.

KL(pi || pi_ref) = E_{y ~ pi(.|x)} [log pi(y|x) - log pi_ref(y|x)], with y sampled at
temperature 1 (no top-p, no top-k) from pi, and log-probabilities summed over the
completion tokens up to and including the first EOS. Both models score the same token
ids, so they must share a tokenizer (vocabulary).

Samples already drawn from the policy under exactly that distribution (the harness's
candidate completions when the generation settings are temperature 1, top-p 1) can be
passed as token ids and are scored like fresh ones; only the shortfall is sampled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from trl_plus.errors import DataError

from .generation import (
    GenerationSettings,
    Policy,
    cache_key,
    cache_lookup,
    cache_store,
    encode_prompts,
    eos_ids_of,
    prompts_hash,
    sample_token_ids,
)


def sequence_logprobs(
    model,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    *,
    pad_id: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """Sum of log p(token) over each completion given its prompt (one value per pair).

    Rows are right-padded (positions then start at 0 for every row, as in generation
    from an unpadded prompt); padding is masked out and never scored.
    """
    import torch

    device = next(model.parameters()).device
    out = np.zeros(len(completion_ids))
    for start in range(0, len(completion_ids), batch_size):
        rows = [list(p) + list(c) for p, c in zip(prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size])]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        target = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
            n_prompt = len(prompt_ids[start + i])
            target[i, n_prompt : len(r)] = True
        ids, mask, target = ids.to(device), mask.to(device), target.to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        out[start : start + len(rows)] = (logp * target[:, 1:]).sum(dim=1).cpu().numpy()
    return out


def estimate_kl(
    policy: Policy,
    reference: Policy,
    prompts: Sequence[str],
    *,
    num_samples: int = 4,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    seed: int = 0,
    cache_path=None,
    progress: bool | str = True,
    policy_samples: Sequence[Sequence[Sequence[int]]] | None = None,
    policy_logprobs: Sequence[Sequence[float]] | None = None,
) -> dict:
    """Monte-Carlo KL(pi || pi_ref) per prompt, averaged over prompts, with its standard error.

    Returns ``{"kl", "stderr", "stderr_over_prompts", "samples", "prompts", "num_samples", "per_sample_std",
    "mean_policy_logprob", "mean_reference_logprob"}``. ``stderr`` is the error of the
    Monte-Carlo sampling with the prompt set held fixed (from the spread of each prompt's
    samples); ``stderr_over_prompts`` treats the prompts as a sample from a larger set.

    ``policy_samples``: completions already sampled from ``policy`` at temperature 1 with
    no top-p / top-k and this ``max_new_tokens``, as token ids cut after the first EOS
    (what :func:`~trl_plus.eval.generation.sample_token_ids` returns), one list per prompt,
    the same number for every prompt. The first ``num_samples`` of each prompt are used;
    the rest of each prompt's ``num_samples`` is sampled here with ``seed``, which must then
    differ from the seed those samples were drawn with, or the two sets are not independent.
    Samples from any other distribution would bias the estimate; the checks here only catch
    a different length cap or EOS handling.

    ``policy_logprobs``: the summed log-probability of each of ``policy_samples`` under the
    policy, as sampling computed it (same layout). The policy's log-probs of the samples
    drawn here are kept from sampling too, so the policy needs no forward pass of its own
    unless some are missing; only the reference scores every sample.
    """
    if len(policy.tokenizer) != len(reference.tokenizer) or policy.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
        raise DataError("KL needs the policy and the reference to share a tokenizer; their vocabularies differ")
    prompts = list(prompts)
    prompt_ids = encode_prompts(policy.tokenizer, prompts)
    given = _checked_samples(policy, policy_samples, len(prompts), num_samples, max_new_tokens)
    reused = len(given[0]) if given else 0
    extra = num_samples - reused
    drawn: list[list[int]] = []
    if extra > 0:
        settings = GenerationSettings(
            max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, num_samples=extra,
            batch_size=batch_size, seed=seed,
        )
        key = cache_key("kl_samples", policy.model_id, prompts_hash(prompts), settings) if policy.model_id else None
        hit = cache_lookup(cache_path, key) if key else None
        if hit is not None:
            drawn, drawn_lp = hit["token_ids"], hit.get("logprobs") or None
        else:
            desc = progress if isinstance(progress, str) else "sampling for KL"
            drawn_lp = []
            drawn = sample_token_ids(policy, prompt_ids, settings, progress=desc if progress else False,
                                     logprobs_out=drawn_lp)
            drawn_lp = drawn_lp or None
            if key:
                cache_store(cache_path, {"key": key, "kind": "kl_samples", "model": policy.model_id,
                                         "settings": settings.to_dict(), "token_ids": drawn,
                                         **({"logprobs": drawn_lp} if drawn_lp else {})})
    else:
        drawn_lp = []
    completions = [
        list(row)
        for i in range(len(prompts))
        for row in (list(given[i]) if given else []) + drawn[i * extra : (i + 1) * extra]
    ]
    expanded = [prompt_ids[i // num_samples] for i in range(len(completions))]
    pad = policy.tokenizer.pad_token_id or 0
    given_lp = [list(row)[:num_samples] for row in policy_logprobs] if (given and policy_logprobs) else None
    from_sampling = (given is None or given_lp is not None) and (extra == 0 or drawn_lp is not None)
    if from_sampling:  # every policy log-prob is known from sampling: no policy forward
        lp = np.array([x for i in range(len(prompts))
                       for x in (given_lp[i] if given_lp else []) + (drawn_lp[i * extra:(i + 1) * extra] if extra else [])])
    else:
        lp = sequence_logprobs(policy.model, expanded, completions, pad_id=pad, batch_size=batch_size)
    lq = sequence_logprobs(reference.model, expanded, completions, pad_id=pad, batch_size=batch_size)
    per_sample = lp - lq
    per_prompt = per_sample.reshape(len(prompts), num_samples).mean(axis=1)
    n = len(per_prompt)
    grid = per_sample.reshape(len(prompts), num_samples)
    if num_samples > 1:  # Monte-Carlo error with the prompt set held fixed
        stderr = float(math.sqrt(grid.var(axis=1, ddof=1).sum() / num_samples) / n)
    else:
        stderr = float(per_sample.std(ddof=1) / math.sqrt(per_sample.size)) if per_sample.size > 1 else math.nan
    return {
        "kl": float(per_prompt.mean()),
        "stderr": stderr,
        "stderr_over_prompts": float(per_prompt.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
        "prompts": n,
        "num_samples": num_samples,
        "samples": int(per_sample.size),
        "per_sample_std": float(per_sample.std(ddof=1)) if per_sample.size > 1 else math.nan,
        "mean_policy_logprob": float(lp.mean()),
        "mean_reference_logprob": float(lq.mean()),
        "mean_completion_tokens": float(np.mean([len(c) for c in completions])),
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "reused_samples": reused,
        "policy_logprobs_from_sampling": bool(from_sampling),
    }


def _checked_samples(policy: Policy, samples, n_prompts: int, num_samples: int, max_new_tokens: int):
    """The first ``num_samples`` given samples of each prompt, after checking they are cut
    as this estimate's own samples would be."""
    if samples is None:
        return None
    samples = [list(per_prompt)[:num_samples] for per_prompt in samples]
    if len(samples) != n_prompts:
        raise DataError(f"policy_samples has {len(samples)} prompts, expected {n_prompts}")
    if not samples or len({len(s) for s in samples}) != 1 or not samples[0]:
        raise DataError("policy_samples needs the same number of samples (at least one) for every prompt")
    eos = eos_ids_of(policy.model, policy.tokenizer)
    for per_prompt in samples:
        for row in per_prompt:
            early_eos = any(int(t) in eos for t in row[:-1])
            stopped_short = len(row) < max_new_tokens and (not row or int(row[-1]) not in eos)
            if len(row) > max_new_tokens or early_eos or stopped_short:
                raise DataError(
                    "policy_samples were not sampled as the KL samples are: each must end at its first EOS "
                    f"or run to max_new_tokens={max_new_tokens}"
                )
    return samples
