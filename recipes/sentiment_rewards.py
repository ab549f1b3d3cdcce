"""A sentiment classifier as a reward source: the gold reward of the IMDb recipe.

The classifier has two labels, so it is read here (``reward_model`` sources have one):
the reward is the probability the classifier gives the ``label`` class for the whole
review, prompt and completion together.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=2)
def _classifier(model: str):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model)
    classifier = AutoModelForSequenceClassification.from_pretrained(model).to(device).eval()
    return tokenizer, classifier, device


def label_probability(prompts, completions, model: str = "lvwerra/distilbert-imdb", label: str = "POSITIVE",
                      batch_size: int = 64, max_length: int = 512, **columns):
    """P(``label`` | prompt + completion) under the classifier ``model``, one per completion."""
    import torch

    from trl_plus.errors import RewardSourceError

    tokenizer, classifier, device = _classifier(model)
    names = {name.upper(): i for i, name in classifier.config.id2label.items()}
    if label.upper() not in names:
        raise RewardSourceError(f"classifier {model!r} has no label {label!r}; its labels: {', '.join(names)}")
    index = names[label.upper()]
    texts = [p + c for p, c in zip(prompts, completions)]
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            out += classifier(**batch).logits.float().softmax(-1)[:, index].tolist()
    return out
