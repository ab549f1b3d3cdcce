"""Sequence-level KL(pi || pi_ref), estimated by Monte Carlo from the policy's own samples.

KL(pi || pi_ref) = E_{y ~ pi(.|x)} [log pi(y|x) - log pi_ref(y|x)], with y sampled at
temperature 1 (no top-p, no top-k) from pi, and log-probabilities summed over the
completion tokens up to and including the first EOS. Both models score the same token
ids, so they must share a tokenizer (vocabulary).

Two estimators of that one quantity, both unbiased, from the same samples:

- ``"token"`` (the default): at every position of a sampled completion, the exact KL
  between the two models' next-token distributions, summed over the positions. By the
  chain rule its expectation is the sequence KL; it averages out which token was drawn at
  each position, so its spread is the smaller one on language models (1.6-8.7x smaller
  variance per sample, median 3.3x, on the quickstart's 27 trained checkpoints). It needs the policy's
  whole next-token distributions: kept from sampling when they fit, else from one
  forward pass of the policy over the samples.
- ``"sample"``: the sampled completion's log-ratio, log pi(y|x) - log pi_ref(y|x). The
  policy's log-probs can come from sampling, so only the reference runs a forward pass.

Samples already drawn from the policy under exactly that distribution (the harness's
candidate completions when the generation settings are temperature 1, top-p 1) can be
passed as token ids and are scored like fresh ones; only the shortfall is sampled.

"The policy's distribution" is the model's own: sampling neutralises every generation
option a checkpoint's ``generation_config.json`` may set (repetition penalty, n-gram
blocking, min-p, suppressed tokens, ...; see
:func:`~trl_plus.eval.generation_settings.evaluation_generation`), so the samples, and the
log-probs and distributions recorded while sampling, are those of the forward pass the
reference is scored with.

A reference that is the policy itself (the same model object, or the same
``model_id``, which for a checkpoint is a hash of its weights and config) gives exactly
0: its log-probs and distributions are the policy's, not a second forward pass that
would differ from sampling's by float rounding.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence

import numpy as np

from trl_plus.errors import DataError

from .checkpoints import Policy
from .generation_cache import cache_key, cache_lookup, cache_store, prompts_hash
from .generation_settings import GenerationSettings
from .sampling import encode_prompts, eos_ids_of, sample_token_ids


ESTIMATORS = ("token", "sample")
# Sampling keeps the policy's next-token distributions for the token estimator (sparing it
# the policy's forward pass) only while rows x max_new_tokens x vocabulary floats fit here.
DISTRIBUTIONS_BUDGET_BYTES = 512 * 2**20


def distributions_fit(model, tokenizer, rows: int, max_new_tokens: int) -> bool:
    """Whether ``rows`` completions' next-token distributions fit the budget."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or len(tokenizer)
    return rows * max_new_tokens * vocab * 4 <= DISTRIBUTIONS_BUDGET_BYTES


def _padded_batches(prompt_ids, completion_ids, pad_id: int, batch_size: int):
    """Right-padded (prompt + completion) rows, ``batch_size`` at a time:
    ``(start, ids, mask, target)``, ``target`` marking the completion tokens. Positions then
    start at 0 for every row, as in generation from an unpadded prompt."""
    import torch

    for start in range(0, len(completion_ids), batch_size):
        prompts = prompt_ids[start : start + batch_size]
        rows = [list(p) + list(c) for p, c in zip(prompts, completion_ids[start : start + batch_size])]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        target = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
            target[i, len(prompts[i]) : len(r)] = True
        yield start, ids, mask, target


def _per_completion(values, target):
    """Sum ``values`` (one per completion token, in row order) over each row's completion."""
    import torch

    rows = torch.nonzero(target[:, 1:])[:, 0].to(values.device)
    return torch.zeros(target.shape[0], device=values.device).index_add_(0, rows, values).cpu().numpy()


def _sampled(logp, ids, target):
    """Each row's summed log-probability of its own completion tokens under ``logp``."""
    tokens = ids[:, 1:][target[:, 1:]].to(logp.device)
    return _per_completion(logp.gather(-1, tokens[:, None])[:, 0], target)


def _completion_logprobs(model, ids, mask, target):
    """Log-softmax of the model's next-token logits at every completion position
    (tokens x vocabulary, rows in order), on the model's device."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return torch.log_softmax(logits[:, :-1][target[:, 1:].to(device)].float(), dim=-1)


def _position_kl(logp, logq, chunk: int = 256):
    """KL(p || q) at each row of two log-softmax tensors (positions x vocabulary).

    Both rows are renormalised and the sum taken in float64: float32 log-softmaxes
    computed two ways (sampling's cached steps, a full forward pass) are each normalised
    only to about 1e-7, which made sum_v p (log p - log q) of two identical models come
    out around +-1e-7 per position, negative as often as not; renormalised, it is the KL
    of two proper distributions, >= 0 up to float64 rounding (floored at 0). A token to
    which p gives probability 0 adds 0 (0 log 0 = 0). ``chunk`` rows at a time, to bound
    the float64 copies' memory."""
    import torch

    out = []
    for i in range(0, logp.shape[0], chunk):
        p = logp[i : i + chunk].double()
        q = logq[i : i + chunk].double()
        p = p - torch.logsumexp(p, dim=-1, keepdim=True)
        q = q - torch.logsumexp(q, dim=-1, keepdim=True)
        terms = torch.where(torch.isneginf(p), torch.zeros_like(p), p.exp() * (p - q))
        out.append(terms.sum(dim=-1).clamp_min(0.0).float())
    return torch.cat(out) if out else logp.new_zeros(0)


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
    out = np.zeros(len(completion_ids))
    for start, ids, mask, target in _padded_batches(prompt_ids, completion_ids, pad_id, batch_size):
        out[start : start + ids.shape[0]] = _sampled(_completion_logprobs(model, ids, mask, target), ids, target)
    return out


def token_kl(
    policy_model,
    reference_model,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    *,
    pad_id: int = 0,
    batch_size: int = 32,
    policy_distributions: Sequence | None = None,
    reference_is_policy: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each completion: the exact KL(pi(.|x, y<t) || pi_ref(.|x, y<t)) of the two
    models' next-token distributions summed over its positions t, then log pi(y|x) and
    log pi_ref(y|x) of the completion itself (three arrays, one value per pair).

    ``policy_distributions``: the policy's log-softmax at each completion's positions as
    sampling kept it (one tensor of completion length x vocabulary per completion); the
    policy then runs no forward pass.

    ``reference_is_policy``: the two are one model; the reference's distributions are then
    the policy's (no forward pass of its own) and every KL is exactly 0.

    Each position's KL is computed by :func:`_position_kl`: never negative, and 0 log 0 = 0."""
    import torch

    kl, lp, lq = (np.zeros(len(completion_ids)) for _ in range(3))
    for start, ids, mask, target in _padded_batches(prompt_ids, completion_ids, pad_id, batch_size):
        logq = None if reference_is_policy else _completion_logprobs(reference_model, ids, mask, target)
        if policy_distributions is not None:
            logp = torch.cat([torch.as_tensor(d) for d in policy_distributions[start : start + ids.shape[0]]])
            logp = logp.to(logq.device if logq is not None else "cpu", torch.float32)
        else:
            logp = _completion_logprobs(policy_model, ids, mask, target)
            logp = logp.to(logq.device) if logq is not None else logp
        if logq is None:
            logq = logp
        if logp.shape != logq.shape:
            raise DataError(
                f"the token KL estimator needs next-token distributions of one size from both models; the policy's "
                f"have {logp.shape[-1]} entries and the reference's {logq.shape[-1]} (eval.kl.estimator: sample "
                "needs only the sampled tokens)"
            )
        end = start + ids.shape[0]
        kl[start:end] = _per_completion(_position_kl(logp, logq), target)
        lp[start:end], lq[start:end] = _sampled(logp, ids, target), _sampled(logq, ids, target)
    return kl, lp, lq


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
    estimator: str = "token",
    policy_distributions: Sequence[Sequence] | None = None,
) -> dict:
    """Monte-Carlo KL(pi || pi_ref) per prompt, averaged over prompts, with its standard error.

    Returns ``{"kl", "stderr", "stderr_over_prompts", "samples", "prompts", "num_samples", "per_sample_std",
    "estimator", "sampled_log_ratio", "mean_policy_logprob", "mean_reference_logprob", ...}``.
    ``stderr`` is the error of the Monte-Carlo sampling with the prompt set held fixed (from
    the spread of each prompt's samples; with one sample per prompt, from the spread over
    all samples, which also counts the prompts' differences and so errs large);
    ``stderr_over_prompts`` treats the prompts as a sample from a larger set.

    ``estimator``: ``"token"`` (the exact per-position KL of the next-token distributions,
    summed along each sample) or ``"sample"`` (each sample's log-ratio); see the module's
    docstring. ``sampled_log_ratio`` is the ``"sample"`` estimate from the same samples,
    whichever estimator is reported: the two agree up to sampling error. A ``reference``
    that is ``policy`` (the same model, or the same non-None ``model_id``) runs no forward
    pass: its log-probs are the policy's, and both estimators give exactly 0
    (``reference_is_policy`` in the result).

    ``policy_samples``: completions already sampled from ``policy`` at temperature 1 with
    no top-p / top-k and this ``max_new_tokens``, as token ids cut after the first EOS
    (what :func:`~trl_plus.eval.sampling.sample_token_ids` returns), one list per prompt,
    the same number for every prompt. The first ``num_samples`` of each prompt are used;
    the rest of each prompt's ``num_samples`` is sampled here with ``seed``, which must then
    differ from the seed those samples were drawn with, or the two sets are not independent.
    Samples from any other distribution would bias the estimate; the checks here only catch
    a different length cap or EOS handling.

    ``policy_logprobs``: the summed log-probability of each of ``policy_samples`` under the
    policy, as sampling computed it (same layout). The policy's log-probs of the samples
    drawn here are kept from sampling too, so the policy needs no forward pass of its own
    unless some are missing; only the reference scores every sample. The ``"token"``
    estimator needs the policy's whole next-token distributions and ignores
    ``policy_logprobs``: it takes them from ``policy_distributions`` (the log-softmax at
    each position of each of ``policy_samples``, as sampling kept it, same layout) and
    keeps them when it samples the shortfall while they fit
    :data:`DISTRIBUTIONS_BUDGET_BYTES`; when any is missing, the policy runs a forward
    pass over every sample instead.
    """
    if estimator not in ESTIMATORS:
        raise DataError(f"unknown KL estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
    if len(policy.tokenizer) != len(reference.tokenizer) or policy.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
        raise DataError("KL needs the policy and the reference to share a tokenizer; their vocabularies differ")
    prompts = list(prompts)
    prompt_ids = encode_prompts(policy.tokenizer, prompts)
    same = policy.model is reference.model or (policy.model_id is not None and policy.model_id == reference.model_id)
    given = _checked_samples(policy, policy_samples, len(prompts), num_samples, max_new_tokens)
    reused = len(given[0]) if given else 0
    extra = num_samples - reused
    drawn: list[list[int]] = []
    drawn_dists: list | None = None
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
            keep = (estimator == "token"
                    and distributions_fit(policy.model, policy.tokenizer, len(prompts) * extra, max_new_tokens))
            drawn_dists = [] if keep else None
            drawn = sample_token_ids(policy, prompt_ids, settings, progress=desc if progress else False,
                                     logprobs_out=drawn_lp, distributions_out=drawn_dists)
            drawn_lp = drawn_lp or None
            if key:
                cache_store(cache_path, {"key": key, "kind": "kl_samples", "model": policy.model_id,
                                         "settings": settings.to_dict(), "token_ids": drawn,
                                         **({"logprobs": drawn_lp} if drawn_lp else {})})
    else:
        drawn_lp = []
    completions = [list(row) for row in _prompt_major(given, drawn, len(prompts), extra)]
    expanded = [prompt_ids[i // num_samples] for i in range(len(completions))]
    pad = policy.tokenizer.pad_token_id or 0
    given_lp = [list(row)[:num_samples] for row in policy_logprobs] if (given and policy_logprobs) else None
    from_sampling = (estimator == "sample" and (given is None or given_lp is not None)
                     and (extra == 0 or drawn_lp is not None))
    # The scores of these very samples under these two models are cached too: a re-run
    # gives the same numbers without a forward pass (the policy's distributions kept from
    # sampling and a forward pass over the samples agree only to float rounding).
    scores_key = (hashlib.sha256(json.dumps([policy.model_id, reference.model_id, estimator, expanded, completions])
                                 .encode()).hexdigest()[:24]
                  if policy.model_id and reference.model_id and cache_path else None)
    hit = cache_lookup(cache_path, scores_key) if scores_key else None
    if hit is not None:
        per_sample, lp, lq = (np.array(hit[k], dtype=float) for k in ("per_sample", "policy_logprobs", "reference_logprobs"))
        from_sampling = bool(hit.get("from_sampling"))
    elif estimator == "token":
        given_d = [list(row)[:num_samples] for row in policy_distributions] if (given and policy_distributions) else None
        have = (given is None or given_d is not None) and (extra == 0 or bool(drawn_dists))
        dists = _prompt_major(given_d, drawn_dists, len(prompts), extra) if have else None
        per_sample, lp, lq = token_kl(policy.model, reference.model, expanded, completions, pad_id=pad,
                                      batch_size=batch_size, policy_distributions=dists, reference_is_policy=same)
        from_sampling = have  # the policy's distributions came from sampling: no policy forward
    else:
        if from_sampling:  # every policy log-prob is known from sampling: no policy forward
            lp = np.array(_prompt_major(given_lp, drawn_lp, len(prompts), extra))
        else:
            lp = sequence_logprobs(policy.model, expanded, completions, pad_id=pad, batch_size=batch_size)
        lq = lp.copy() if same else sequence_logprobs(reference.model, expanded, completions, pad_id=pad,
                                                      batch_size=batch_size)
        per_sample = lp - lq
    if scores_key and hit is None:
        cache_store(cache_path, {"key": scores_key, "kind": "kl_scores", "model": policy.model_id,
                                 "reference_model": reference.model_id, "estimator": estimator,
                                 "from_sampling": bool(from_sampling), "per_sample": per_sample.tolist(),
                                 "policy_logprobs": lp.tolist(), "reference_logprobs": lq.tolist()})
    per_prompt = per_sample.reshape(len(prompts), num_samples).mean(axis=1)
    n = len(per_prompt)
    grid = per_sample.reshape(len(prompts), num_samples)
    if num_samples > 1:  # Monte-Carlo error with the prompt set held fixed
        stderr = float(math.sqrt(grid.var(axis=1, ddof=1).sum() / num_samples) / n)
    else:
        stderr = float(per_sample.std(ddof=1) / math.sqrt(per_sample.size)) if per_sample.size > 1 else math.nan
    return {
        "kl": float(per_prompt.mean()),
        "estimator": estimator,
        "sampled_log_ratio": float((lp - lq).mean()),
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
        "reference_is_policy": bool(same),
    }


def _prompt_major(given, drawn, n_prompts: int, extra: int) -> list:
    """Prompt after prompt: its given rows (``given[i]``, if any), then its ``extra`` rows of
    the prompt-major ``drawn``."""
    return [x for i in range(n_prompts)
            for x in (list(given[i]) if given else []) + list((drawn or [])[i * extra:(i + 1) * extra])]


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
