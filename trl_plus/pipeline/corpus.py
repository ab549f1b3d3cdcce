"""The quickstart's task, generated in code: short film reviews and a lexicon sentiment.

A small grammar writes reviews of three to five clauses; each clause carries a positive,
a negative or a neutral word from a fixed lexicon (40 positive, 40 negative words), so a
language model trained on the corpus continues a prompt with either sentiment about
equally often. The gold reward of a completion is its lexicon sentiment: (positive
words - negative words) / words. Nothing here touches the network or any file.
"""

from __future__ import annotations

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


def _clause(rng: random.Random, sentiment: str) -> str:
    subj = rng.choice(SUBJECTS)
    if sentiment == "neu":
        return f"{subj} {rng.choice(LINKS)} {rng.choice(INTENS)}{rng.choice(NEUTRAL_ADJ)}"
    if rng.random() < 0.12:
        return rng.choice(_TAILS[sentiment])
    template = rng.choice(_TEMPLATES[sentiment])
    adj, adj2 = rng.sample(_ADJ[sentiment], 2)
    return template.format(
        subj=subj, link=rng.choice(LINKS), intens=rng.choice(INTENS), adj=adj, adj2=adj2,
        verb=rng.choice(_VERBS[sentiment]), noun=rng.choice(_NOUNS[sentiment]), rec=rng.choice(_RECS[sentiment]),
    )


def review(rng: random.Random) -> str:
    """One review: a per-review lean, then three to five clauses drawn around it."""
    lean = rng.random()
    clauses = []
    for _ in range(rng.randint(3, 5)):
        r = rng.random()
        sentiment = "neu" if r < 0.25 else ("pos" if rng.random() < lean else "neg")
        clauses.append(_clause(rng, sentiment))
    return " . ".join(clauses) + " ."


def make_corpus(n_reviews: int, seed: int = 0) -> list[str]:
    """``n_reviews`` texts ``"review : <clauses> ."``, deterministic in ``seed``."""
    rng = random.Random(seed)
    return [f"{PROMPT_PREFIX} {review(rng)}" for _ in range(n_reviews)]


def make_prompts(n: int, seed: int) -> list[str]:
    """Prompts: the prefix and a sentiment-free opening (``"review : the plot was"``).

    The completion decides the sentiment, so the gold reward measures the policy, not
    the prompt.
    """
    rng = random.Random(seed)
    return [f"{PROMPT_PREFIX} {rng.choice(SUBJECTS)} {rng.choice(LINKS)}" for _ in range(n)]


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
