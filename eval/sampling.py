"""Batched sampling of completion token ids from a :class:`~trl_plus.eval.checkpoints.Policy`.

Prompts are sorted by length and left-padded, so a batch wastes little compute and every
row's last prompt token sits at the same position. Sampling runs inside
:func:`~trl_plus.eval.generation_settings.evaluation_generation` (the model's own
distribution), and can record each completion's log-probability and next-token
distributions as it samples, sparing the KL estimate a forward pass.

Each model samples from its own random stream: the seed actually used is derived from the
model's identity, the configured seed and a stream name (:func:`sample_seed`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from .checkpoints import Policy
from .generation_settings import GenerationSettings, evaluation_generation, samples_own_distribution


DEFAULT_STREAM = "candidate"


def sample_seed(model_identity: str | None, seed: int, stream: str = DEFAULT_STREAM) -> int:
    """The seed a model samples with: a stable hash of its identity (a :class:`Policy`'s
    ``model_id``, :func:`checkpoint_id` of a path), the configured ``seed`` and a stream name.

    Different models, or different streams of one model (the harness draws a checkpoint's
    own completions from ``"candidate"``, a reference checkpoint's from ``"reference"``
    and extra KL samples from ``"kl"``), get unrelated seeds; the same arguments always
    give the same seed. A model without an identity (``None``) shares its stream with
    every other model without one. The value fits in 48 bits, so it survives JSON readers
    that hold numbers as doubles.
    """
    payload = json.dumps({"model": model_identity, "seed": int(seed), "stream": stream}, sort_keys=True)
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:6], "big")


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    return [tokenizer(p)["input_ids"] for p in prompts]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


def cut_at_eos(tokens: Sequence[int], eos_ids: set[int]) -> list[int]:
    """The completion up to and including its first EOS (what follows is padding)."""
    out = []
    for t in tokens:
        out.append(int(t))
        if t in eos_ids:
            break
    return out


def eos_ids_of(model, tokenizer) -> set[int]:
    ids = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (eos if isinstance(eos, list) else [eos]) + [tokenizer.eos_token_id]:
        if value is not None:
            ids.add(int(value))
    return ids


def _logprob_recorder(keep_distributions: bool = False):
    """A logits processor that keeps the log-probability of each sampled token.

    ``generate`` calls it once per new token with the ids so far; the token sampled at the
    previous call is the last of them, so its log-probability is read from the previous
    call's log-softmax (the last token's after ``generate`` returns, by :meth:`finish`).
    Only that one distribution is held, never the logits of every step, unless
    ``keep_distributions``: then every step's log-softmax is kept for :meth:`finish`.
    """
    import torch
    from transformers import LogitsProcessor

    class Recorder(LogitsProcessor):
        def __init__(self):
            self.prev, self.steps, self.distributions = None, [], []

        def __call__(self, input_ids, scores):
            if self.prev is not None:
                self.steps.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
            self.prev = torch.log_softmax(scores.float(), dim=-1)
            if keep_distributions:
                self.distributions.append(self.prev)
            return scores

        def finish(self, new_tokens):
            """Per-token log-probs of ``new_tokens`` (rows x steps) and, when kept, every
            step's log-softmax (rows x steps x vocabulary, else None); then reset."""
            if self.prev is not None:
                self.steps.append(self.prev.gather(1, new_tokens[:, -1:]).squeeze(1))
            out = torch.stack(self.steps, dim=1) if self.steps else new_tokens.new_zeros(new_tokens.shape, dtype=torch.float)
            dists = torch.stack(self.distributions, dim=1) if self.distributions else None
            self.prev, self.steps, self.distributions = None, [], []
            return out, dists

    return Recorder()


def sample_token_ids(
    policy: Policy,
    prompt_ids: Sequence[Sequence[int]],
    settings: GenerationSettings,
    *,
    progress: bool | str = True,
    logprobs_out: list | None = None,
    distributions_out: list | None = None,
) -> list[list[int]]:
    """Completion token ids (cut after the first EOS), prompt-major:
    ``num_samples`` rows per prompt, in the order of ``prompt_ids``.

    ``logprobs_out``: a list that receives, in the same order, each completion's summed
    log-probability under the model as sampling computed it (no second forward pass);
    only when ``settings`` sample the model's own distribution
    (:func:`samples_own_distribution`), otherwise it is left empty.

    ``distributions_out``: likewise (same condition), a list that receives each
    completion's next-token log-softmax at every one of its positions, a CPU float tensor
    of completion length x vocabulary (what the token-level KL needs of the policy; the
    caller bounds its size, which is rows x max_new_tokens x vocabulary floats).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList

    model, tok = policy.model, policy.tokenizer
    eos = eos_ids_of(model, tok)
    order = sorted(range(len(prompt_ids)), key=lambda i: (-len(prompt_ids[i]), i))
    results: list[list[list[int]] | None] = [None] * len(prompt_ids)
    own = samples_own_distribution(settings)
    keep = own and distributions_out is not None
    record = own and (logprobs_out is not None or keep)
    recorder = _logprob_recorder(keep_distributions=keep) if record else None
    sums: list[list[float] | None] = [None] * len(prompt_ids)
    dists: list[list | None] = [None] * len(prompt_ids)
    torch.manual_seed(settings.seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(settings.seed)
    desc = progress if isinstance(progress, str) else "generating"
    bar = tqdm(total=len(order), desc=desc, unit="prompt", disable=not progress, leave=False)
    try:
        with evaluation_generation(policy, settings, eos) as config:
            for start in range(0, len(order), settings.batch_size):
                chunk = order[start : start + settings.batch_size]
                ids, mask = left_pad([prompt_ids[i] for i in chunk], tok.pad_token_id)
                ids, mask = ids.to(policy.device), mask.to(policy.device)
                with torch.no_grad():
                    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                         logits_processor=LogitsProcessorList([recorder]) if record else None)
                new_t = out[:, ids.shape[1] :]
                new = new_t.tolist()
                token_lp, step_dists = recorder.finish(new_t) if record else (None, None)
                token_lp = token_lp.tolist() if record else None
                step_dists = step_dists.cpu() if keep else None
                for j, i in enumerate(chunk):
                    k = slice(j * settings.num_samples, (j + 1) * settings.num_samples)
                    results[i] = [cut_at_eos(r, eos) for r in new[k]]
                    if record:
                        sums[i] = [float(sum(lp[: len(r)])) for lp, r in zip(token_lp[k], results[i])]
                    if keep:
                        dists[i] = [step_dists[j * settings.num_samples + m, : len(r)]
                                    for m, r in enumerate(results[i])]
                bar.update(len(chunk))
    finally:
        bar.close()
    if logprobs_out is not None and record:
        logprobs_out.extend(x for per_prompt in sums for x in per_prompt)  # type: ignore[union-attr]
    if keep:
        distributions_out.extend(d for per_prompt in dists for d in per_prompt)  # type: ignore[union-attr]
    return [row for per_prompt in results for row in per_prompt]  # type: ignore[union-attr]


def decode(tokenizer, completions: Sequence[Sequence[int]]) -> list[str]:
    return tokenizer.batch_decode(completions, skip_special_tokens=True)
