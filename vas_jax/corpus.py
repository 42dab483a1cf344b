"""A synthetic corpus of short movie reviews, for the shipped tiny model and the demo.

Reviews vary in sentiment (positive, negative, mixed), register (casual, formal) and length
(1 to 6 sentences), so a model trained on them produces samples whose positivity and length
spread widely: what the built-in rewards measure. Generation is deterministic given a seed.
"""

from __future__ import annotations

import random
import re

SUBJECTS = [
    "the movie",
    "the film",
    "this movie",
    "the plot",
    "the acting",
    "the cast",
    "the ending",
    "the music",
    "the story",
    "the director",
    "the script",
    "the dialogue",
    "the lead",
    "the pacing",
]
POSITIVE = [
    "great",
    "wonderful",
    "brilliant",
    "lovely",
    "fun",
    "moving",
    "excellent",
    "charming",
    "beautiful",
    "funny",
    "clever",
    "gripping",
]
NEGATIVE = [
    "terrible",
    "boring",
    "awful",
    "dull",
    "messy",
    "weak",
    "bad",
    "tedious",
    "silly",
    "bland",
    "forgettable",
    "clumsy",
]
NEUTRAL = ["long", "loud", "slow", "simple", "different", "quiet", "odd", "busy"]
CASUAL_INT = ["really", "so", "super", "pretty", "kinda", "totally"]
FORMAL_INT = ["remarkably", "quite", "rather", "truly", "thoroughly", "genuinely"]
POS_VERBS = ["loved", "enjoyed", "liked", "adored"]
NEG_VERBS = ["hated", "disliked", "regretted", "endured"]
CASUAL_END = {
    "pos": ["would watch again !", "10 / 10 .", "go see it !", "so good lol ."],
    "neg": ["not for me .", "skip it .", "what a waste lol .", "meh ."],
}
FORMAL_END = {
    "pos": ["i would recommend it .", "it is well worth seeing .", "a fine achievement ."],
    "neg": ["i cannot recommend it .", "it is not worth seeing .", "a disappointing effort ."],
}

POSITIVE_WORDS = set(POSITIVE) | set(POS_VERBS) | {"recommend", "good", "fine", "worth", "again"}
NEGATIVE_WORDS = set(NEGATIVE) | set(NEG_VERBS) | {"cannot", "waste", "skip", "meh", "disappointing", "not"}


def _sentence(rng: random.Random, pol: str, formal: bool) -> str:
    subj = rng.choice(SUBJECTS)
    adj = rng.choice(POSITIVE if pol == "pos" else NEGATIVE if pol == "neg" else NEUTRAL)
    inten = rng.choice(FORMAL_INT if formal else CASUAL_INT)
    kind = rng.random()
    if kind < 0.45:
        return f"{subj} was {inten} {adj} ."
    if kind < 0.7 and pol != "neu":
        verb = rng.choice(POS_VERBS if pol == "pos" else NEG_VERBS)
        return f"i {verb} {subj} ." if not formal else f"i {inten} {verb} {subj} ."
    if kind < 0.85:
        return f"overall , {subj} is {inten} {adj} ." if formal else f"{subj} is {inten} {adj} tbh ."
    return f"{subj} felt {adj} and {rng.choice(POSITIVE if pol == 'pos' else NEGATIVE if pol == 'neg' else NEUTRAL)} ."


def review(rng: random.Random) -> str:
    """One review: 'review : <sentences>'."""
    mood = rng.choices(["pos", "neg", "mixed"], weights=[0.4, 0.4, 0.2])[0]
    formal = rng.random() < 0.5
    n = rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6])
    parts = []
    for _ in range(n):
        if mood == "mixed":
            pol = rng.choice(["pos", "neg", "neu"])
        else:
            pol = mood if rng.random() < 0.85 else "neu"
        parts.append(_sentence(rng, pol, formal))
    if rng.random() < 0.4 and mood != "mixed":
        parts.append(rng.choice((FORMAL_END if formal else CASUAL_END)[mood]))
    return " ".join(["review :"] + parts)


def make_corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [review(rng) for _ in range(n)]


def demo_prompts(n: int, seed: int = 1) -> list[str]:
    """Prompts that start a review: 'review :' plus 0-3 words of a first sentence."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = review(rng).split()
        k = rng.choice([2, 3, 4, 5])
        out.append(" ".join(r[:k]))
    return out


# ----------------------------------------------------------------------------- built-in rewards


def words(text: str) -> list[str]:
    """Lower-case words and '!' marks, whatever the spacing around punctuation."""
    return re.findall(r"[a-z0-9']+|!", text.lower())


def positivity(prompts, responses) -> list[float]:
    """Positive words minus negative words in the response."""
    out = []
    for r in responses:
        w = words(r)
        out.append(float(sum(x in POSITIVE_WORDS for x in w) - sum(x in NEGATIVE_WORDS for x in w)))
    return out


def brevity(prompts, responses) -> list[float]:
    """Shorter is better: minus the response's length in words, over 10."""
    return [-len(words(r)) / 10.0 for r in responses]
