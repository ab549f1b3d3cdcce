"""Sampling completions for the pairs stage: batched, left-padded, seeded. The model and
its tokenizer come loaded (the pairs stage loads them through the model-loading hook)."""

from __future__ import annotations


def sample(model, tokenizer, prompts: list[str], *, max_new_tokens: int, temperature: float = 1.0,
           batch_size: int = 128, seed: int = 0, progress=None) -> tuple[list[str], int]:
    """One sampled completion per prompt (the prompt text excluded) and the tokens generated."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    # Sorting by length keeps padding (wasted compute) small; results go back in order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str | None] = [None] * len(prompts)
    tokens = 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True)
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
    return [o or "" for o in out], tokens
