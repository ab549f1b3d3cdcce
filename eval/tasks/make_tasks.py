"""Writes the offline lm-eval pack's JSONL files: ``python eval/tasks/make_tasks.py``.

Each item pairs a review written by the quickstart's grammar
(``trl_plus.pipeline.corpus``) with a corrupted copy that holds exactly the same words
in another order, so the two choices carry the same tokens and only a model that
learned word order can tell them apart; a model that did not sits at 0.5. Three
corruptions probe fluency at three scales:

- ``review_word_order.jsonl``: every word and punctuation mark of the review shuffled;
- ``review_word_swap.jsonl``: two adjacent words inside one clause swapped, a minimal
  pair that differs in one place;
- ``review_intensifier.jsonl``: an intensifier (``really``, ``very``, ``quite``, ``so``)
  moved from a clause ``<subject> <verb> <intensifier> <adj>`` into a clause
  ``<subject> <verb> <adj> and <adj>``, which the grammar never intensifies. Every
  word pair stays one the grammar writes and both texts hold the same sentiment
  words, so only that longer-range rule tells them apart.

The three are meant as a ladder: a policy that lost only a little fluency first
slips on the intensifier pairs, one that lost more on the swapped pairs.

Every corrupted text is checked against a recogniser of the grammar, so no corruption
happens to be a well-formed review. The seeds differ from those the quickstart's
corpus (0) and prompts (1, 2) use, and no review of the quickstart's training corpus
(``make_corpus(8000, 0)``) is an item. The correct choice sits first in half of the
items and second in the other half, balanced within every consecutive two, so any
``limit`` of even size is balanced too. The output depends only on the grammar and the
seeds: rerun this script after changing either.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from trl_plus.pipeline import corpus as grammar

HERE = Path(__file__).resolve().parent
ITEMS = 250
TRAIN_CORPUS = (8000, 0)  # the quickstart's make_corpus(reviews, seed)
SEEDS = {"review_word_order": 10, "review_word_swap": 11, "review_intensifier": 12}


def _alt(words) -> str:
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


def _clause_pattern() -> str:
    # Built from the grammar's own tables, so it follows any change to them.
    subj, link = _alt(grammar.SUBJECTS), _alt(grammar.LINKS)
    intens = "(?:" + _alt(i.strip() for i in grammar.INTENS if i.strip()) + " )?"
    forms = [f"{subj} {link} {intens}{_alt(grammar.NEUTRAL_ADJ)}"]
    for sentiment, templates in grammar._TEMPLATES.items():
        adj = _alt(grammar._ADJ[sentiment])
        fields = {
            "subj": subj, "link": link, "intens": intens, "adj": adj, "adj2": adj,
            "verb": _alt(grammar._VERBS[sentiment]), "noun": _alt(grammar._NOUNS[sentiment]),
            "rec": _alt(grammar._RECS[sentiment]),
        }
        forms += [template.format(**fields) for template in templates]
        forms += [re.escape(tail) for tail in grammar._TAILS[sentiment]]
    return "(?:" + "|".join(f"(?:{f})" for f in forms) + ")"


_CLAUSE = _clause_pattern()
_REVIEW = re.compile(rf"{_CLAUSE}(?: \. {_CLAUSE})* \.")


def is_review(text: str) -> bool:
    """Whether ``text`` (without the ``review :`` prefix) is one the grammar can write.

    It accepts a little more than the grammar (any number of clauses, a repeated
    adjective), which only makes the corruption check stricter.
    """
    return _REVIEW.fullmatch(text) is not None


def shuffle_words(rng: random.Random, text: str) -> str:
    words = text.split()
    while True:
        rng.shuffle(words)
        out = " ".join(words)
        if out != text:
            return out


def swap_adjacent(rng: random.Random, text: str) -> str:
    clauses = text[: -len(" .")].split(" . ")
    i = rng.choice([k for k, c in enumerate(clauses) if len(c.split()) > 1])
    words = clauses[i].split()
    j = rng.choice([k for k in range(len(words) - 1) if words[k] != words[k + 1]])
    words[j], words[j + 1] = words[j + 1], words[j]
    clauses[i] = " ".join(words)
    return " . ".join(clauses) + " ."


def move_intensifier(rng: random.Random, text: str) -> str | None:
    """None when the review lacks an ``and`` clause or an intensified clause."""
    clauses = [c.split() for c in text[: -len(" .")].split(" . ")]
    intensifiers = {i.strip() for i in grammar.INTENS if i.strip()}
    adjectives = set(grammar.POSITIVE_ADJ) | set(grammar.NEGATIVE_ADJ)
    joined = [i for i, w in enumerate(clauses) if len(w) > 3 and w[-2] == "and" and w[-1] in adjectives]
    intensified = [i for i, w in enumerate(clauses) if len(w) > 3 and w[-2] in intensifiers]
    pairs = [(a, b) for a in joined for b in intensified if a != b]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    word = clauses[b].pop(-2)
    clauses[a].insert(len(clauses[a]) - 3, word)  # before the first of "<adj> and <adj>"
    return " . ".join(" ".join(words) for words in clauses) + " ."


CORRUPTIONS: dict[str, Callable[[random.Random, str], str | None]] = {
    "review_word_order": shuffle_words,
    "review_word_swap": swap_adjacent,
    "review_intensifier": move_intensifier,
}


def training_reviews() -> set[str]:
    prefix = grammar.PROMPT_PREFIX + " "
    return {t[len(prefix) :] for t in grammar.make_corpus(*TRAIN_CORPUS)}


def make_items(name: str, n: int = ITEMS, exclude: set[str] | None = None) -> list[dict]:
    """``n`` items ``{"review", "choices", "label"}``: ``choices[label] == review``."""
    exclude = training_reviews() if exclude is None else exclude
    rng = random.Random(SEEDS[name])
    corrupt = CORRUPTIONS[name]
    items, seen = [], set()
    while len(items) < n:
        text = grammar.review(rng)
        if text in exclude or text in seen:
            continue
        assert is_review(text), f"the recogniser rejects a review the grammar wrote: {text!r}"
        bad = corrupt(rng, text)
        if bad is None or is_review(bad):
            continue
        seen.add(text)
        items.append({"review": text, "corrupted": bad})
    for start in range(0, n, 2):
        first = int(rng.random() < 0.5)
        for item, label in zip(items[start : start + 2], (first, 1 - first)):
            corrupted = item.pop("corrupted")
            item["choices"] = [corrupted, item["review"]] if label else [item["review"], corrupted]
            item["label"] = label
    return items


def render(items: list[dict]) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


def main() -> None:
    exclude = training_reviews()
    for name in CORRUPTIONS:
        (HERE / f"{name}.jsonl").write_text(render(make_items(name, exclude=exclude)))


if __name__ == "__main__":
    main()
