"""Sampling completions from a causal LM and labelling the best and worst of each prompt's:
what the pipeline's pairs stage does with the SFT model, and what online DPO does with the
current policy every round. Batched, left-padded, seeded; the model and its tokenizer come
loaded (by the caller, through the model-loading hook)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["sample", "best_worst_pairs"]


def sample(model, tokenizer, prompts: list[str], *, max_new_tokens: int, temperature: float = 1.0,
           batch_size: int = 128, seed: int = 0, progress=None) -> tuple[list[str], int]:
    """One sampled completion per prompt (the prompt text excluded) and the tokens generated.

    ``torch.manual_seed(seed)`` is set first, so the same model, prompts and seed give the
    same completions. The tokenizer pads on the left while sampling and gets its padding
    side back afterwards; the inputs go to the model's device.
    """
    import torch

    torch.manual_seed(seed)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    # Sorting by length keeps padding (wasted compute) small; results go back in order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str | None] = [None] * len(prompts)
    tokens = 0
    device = getattr(model, "device", None)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True)
            if device is not None:
                enc = enc.to(device)
            with torch.no_grad():
                gen = model.generate(
                    **enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                    max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new = gen[:, enc["input_ids"].shape[1]:]
            tokens += int((new != tokenizer.pad_token_id).sum())
            for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
                out[i] = text
            if progress is not None:
                progress.update(len(idx))
    finally:
        tokenizer.padding_side = side
    return [o or "" for o in out], tokens


def best_worst_pairs(prompts: Sequence, completions: Sequence[Sequence[str]],
                     scores: Sequence[Sequence[float | None]], min_margin: float = 0.0) -> list[dict]:
    """One preference pair per prompt: its best-scored completion chosen, its worst rejected.

    ``completions[i]`` and ``scores[i]`` are prompt ``i``'s completions and their scores
    (None: unscored, left out). A prompt with fewer than two scored completions, or whose
    best and worst are a tie (a margin of at most ``min_margin``, or the same text), gives
    no pair: it teaches nothing. Rows: ``prompt``, ``chosen``, ``rejected``,
    ``chosen_reward``, ``rejected_reward``.
    """
    rows = []
    for prompt, texts, values in zip(prompts, completions, scores, strict=True):
        cands = [(s, t) for s, t in zip(values, texts, strict=True) if s is not None]
        if len(cands) < 2:
            continue
        best, worst = max(cands, key=lambda c: c[0]), min(cands, key=lambda c: c[0])
        if best[0] - worst[0] <= min_margin or best[1] == worst[1]:
            continue  # a tie teaches nothing
        rows.append({"prompt": prompt, "chosen": best[1], "rejected": worst[1],
                     "chosen_reward": best[0], "rejected_reward": worst[0]})
    return rows
