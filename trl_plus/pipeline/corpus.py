"""The quickstart's task, generated in code: short film reviews and a lexicon sentiment.

A small grammar writes reviews of three to five clauses; each clause carries a positive,
a negative or a neutral word from a fixed lexicon (40 positive, 40 negative words), so a
language model trained on the corpus continues a prompt with either sentiment about
equally often. The gold reward of a completion is its lexicon sentiment: (positive
words - negative words) / words. Nothing here touches the network or any file.

Prompts are *openings*: a sentiment-free first clause and the head of the next one
(``"review : the music was quite loud . the plot was"``). About a fifth of all possible
openings are reserved for evaluation (``is_eval_opening``, a stable hash of the string):
training prompts never use them, and no review of the corpus starts with one, so the
held-out prompts are new to every trained model, SFT included.
"""

from __future__ import annotations

import hashlib
import random
import re

POSITIVE_ADJ = (
    "great wonderful superb brilliant moving charming delightful gripping stunning lovely "
    "beautiful clever fresh funny touching elegant joyful vivid rich excellent"
).split()
NEGATIVE_ADJ = (
    "awful terrible boring dull weak clumsy tedious bland messy flat "
    "lifeless shallow stale silly painful ugly poor sloppy forgettable dreadful"
).split()
POSITIVE_OTHER = "loved enjoyed adored admired praise gem masterpiece triumph delight treasure " \
                 "recommend treat joy pleasure marvel favourite winner fun wow best".split()
NEGATIVE_OTHER = "hated disliked regret wasted mess disaster failure chore letdown waste " \
                 "avoid bore yawn flop nonsense worst trash headache cringe misfire".split()
POSITIVE_WORDS = frozenset(POSITIVE_ADJ + POSITIVE_OTHER)
NEGATIVE_WORDS = frozenset(NEGATIVE_ADJ + NEGATIVE_OTHER)
assert len(POSITIVE_WORDS) == 40 and len(NEGATIVE_WORDS) == 40 and not POSITIVE_WORDS & NEGATIVE_WORDS

NEUTRAL_ADJ = "long short loud quiet slow fast old new simple strange".split()
SUBJECTS = (
    "the movie", "the film", "the acting", "the plot", "the story", "the music", "the ending",
    "the cast", "the script", "the director", "the pacing", "the dialogue", "the lead", "the score",
    "the camera work", "the second half", "the opening", "the villain",
)
LINKS = ("was", "is", "felt", "seemed")
INTENS = ("", "", "", "really ", "very ", "quite ", "so ")

# Per sentiment: (clause templates, the words a template may draw).
_TEMPLATES = {
    "pos": (
        "{subj} {link} {intens}{adj}",
        "i {verb} it",
        "what a {noun}",
        "{subj} {link} {adj} and {adj2}",
        "i would {rec} it",
    ),
    "neg": (
        "{subj} {link} {intens}{adj}",
        "i {verb} it",
        "what a {noun}",
        "{subj} {link} {adj} and {adj2}",
        "i would {rec} it",
    ),
}
_VERBS = {"pos": ("loved", "enjoyed", "adored", "admired"), "neg": ("hated", "disliked", "regret", "wasted")}
_NOUNS = {
    "pos": ("gem", "masterpiece", "triumph", "delight", "treasure", "treat", "joy", "pleasure", "marvel", "winner"),
    "neg": ("mess", "disaster", "failure", "chore", "letdown", "waste", "bore", "flop", "headache", "misfire"),
}
_RECS = {"pos": ("recommend",), "neg": ("avoid",)}
_TAILS = {
    "pos": ("my favourite this year", "pure fun", "the best of the lot", "a joy to watch", "wow , just wow", "worth the praise"),
    "neg": ("the worst of the lot", "total nonsense", "a real yawn", "pure trash", "pure cringe", "a waste of time"),
}
_ADJ = {"pos": POSITIVE_ADJ, "neg": NEGATIVE_ADJ}
PROMPT_PREFIX = "review :"


def _clause(rng: random.Random, sentiment: str) -> tuple[str, str | None]:
    """One clause, and its head (``"the plot was"``) when it starts with a subject and a link."""
    subj = rng.choice(SUBJECTS)
    if sentiment == "neu":
        link = rng.choice(LINKS)
        return f"{subj} {link} {rng.choice(INTENS)}{rng.choice(NEUTRAL_ADJ)}", f"{subj} {link}"
    if rng.random() < 0.12:
        return rng.choice(_TAILS[sentiment]), None
    template = rng.choice(_TEMPLATES[sentiment])
    adj, adj2 = rng.sample(_ADJ[sentiment], 2)
    link = rng.choice(LINKS)
    text = template.format(
        subj=subj, link=link, intens=rng.choice(INTENS), adj=adj, adj2=adj2,
        verb=rng.choice(_VERBS[sentiment]), noun=rng.choice(_NOUNS[sentiment]), rec=rng.choice(_RECS[sentiment]),
    )
    return text, (f"{subj} {link}" if template.startswith("{subj}") else None)


def is_eval_opening(prompt: str) -> bool:
    """True for the openings reserved for evaluation (a fifth, by a stable hash of the text)."""
    return hashlib.sha1(prompt.strip().encode()).digest()[0] % 5 == 0


def _opening_of(clauses: list[tuple[str, str | None]], neutral_first: bool) -> str | None:
    """The prompt-shaped prefix of a review (neutral first clause, head of the second)."""
    if not neutral_first or len(clauses) < 2 or clauses[1][1] is None:
        return None
    return f"{PROMPT_PREFIX} {clauses[0][0]} . {clauses[1][1]}"


def review(rng: random.Random) -> str:
    """One review: a per-review lean, then three to five clauses drawn around it. A review
    that would begin with an evaluation opening is drawn again."""
    while True:
        lean = rng.random()
        clauses, first_neutral = [], False
        for i in range(rng.randint(3, 5)):
            r = rng.random()
            sentiment = "neu" if r < 0.25 else ("pos" if rng.random() < lean else "neg")
            first_neutral = first_neutral or (i == 0 and sentiment == "neu")
            clauses.append(_clause(rng, sentiment))
        opening = _opening_of(clauses, first_neutral)
        if opening is None or not is_eval_opening(opening):
            return " . ".join(c for c, _ in clauses) + " ."


def make_corpus(n_reviews: int, seed: int = 0) -> list[str]:
    """``n_reviews`` texts ``"review : <clauses> ."``, deterministic in ``seed``."""
    rng = random.Random(seed)
    return [f"{PROMPT_PREFIX} {review(rng)}" for _ in range(n_reviews)]


def _opening(rng: random.Random) -> str:
    first = f"{rng.choice(SUBJECTS)} {rng.choice(LINKS)} {rng.choice(INTENS)}{rng.choice(NEUTRAL_ADJ)}"
    return f"{PROMPT_PREFIX} {first} . {rng.choice(SUBJECTS)} {rng.choice(LINKS)}"


def make_prompts(n: int, seed: int, split: str = "train") -> list[str]:
    """``n`` prompts: openings with no sentiment word (``"review : the music was loud .
    the plot was"``), so the completion decides the reward.

    :param split: ``"train"`` draws from the openings training may use (repeats allowed);
        ``"eval"`` draws ``n`` *distinct* openings from those reserved for evaluation.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    rng = random.Random(seed)
    held = split == "eval"
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        prompt = _opening(rng)
        if is_eval_opening(prompt) != held or (held and prompt in seen):
            continue
        seen.add(prompt)
        out.append(prompt)
    return out


def make_eval_prompts(n_val: int, n_test: int, seed: int) -> tuple[list[str], list[str]]:
    """Distinct held-out openings, split into validation (choosing checkpoints) and test
    (reporting): no string is in both, nor in any training prompt or corpus review."""
    prompts = make_prompts(n_val + n_test, seed, split="eval")
    return prompts[:n_val], prompts[n_val:]


_WORD = re.compile(r"[a-z]+")


def sentiment(text: str) -> float:
    """(positive - negative lexicon words) / words, in [-1, 1]; 0.0 for an empty text."""
    words = _WORD.findall(text.lower())
    if not words:
        return 0.0
    pos = sum(w in POSITIVE_WORDS for w in words)
    neg = sum(w in NEGATIVE_WORDS for w in words)
    return (pos - neg) / len(words)


def gold_reward(prompts, completions, **columns) -> list[float]:
    """Reward source (``python`` source ``trl_plus.pipeline.corpus:gold_reward``): lexicon sentiment of each completion."""
    return [sentiment(c) for c in completions]
