"""Two text rewards from maintained libraries, run offline: the real demo's rewards, and a user's.

    vas score --data runs/r --reward-fn vas_jax.text_rewards:sentiment --column reward_sentiment

`sentiment`: vaderSentiment's compound score, in [-1, 1] (a lexicon and rules, no model).
`readability`: textstat's Flesch reading ease, clipped to [0, 100] (higher reads more easily). The
formula rewards short words and short sentences without bound (a lone "Yes." scores 121, an empty
string 207), so it is clipped to the range its scale describes, and an answer with no words scores
0: otherwise stopping at once would be the best answer.

textstat is pinned to 0.7.3 (the `real` extra): later versions fetch NLTK data over the network
at run time; 0.7.3 needs only pyphen's bundled dictionaries (and setuptools' pkg_resources).
"""

from __future__ import annotations

import functools
import warnings
from typing import Sequence

from .errors import VasError


@functools.cache
def _vader():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise VasError("the sentiment reward needs vaderSentiment: pip install -e '.[real]'") from None
    return SentimentIntensityAnalyzer()


@functools.cache
def _textstat():
    try:
        with warnings.catch_warnings():  # textstat 0.7.3 imports pkg_resources, which warns that it is deprecated
            warnings.simplefilter("ignore")
            import textstat
    except ImportError:
        raise VasError("the readability reward needs textstat 0.7.3: pip install -e '.[real]'") from None
    return textstat


def sentiment(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """VADER's compound sentiment of each response, in [-1, 1]; the prompt is not read."""
    vader = _vader()
    return [float(vader.polarity_scores(r)["compound"]) for r in responses]


def readability(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Flesch reading ease of each response, clipped to [0, 100]; 0 for an answer without words."""
    ts = _textstat()
    out = []
    for r in responses:
        if not any(c.isalpha() for c in r):
            out.append(0.0)
        else:
            out.append(float(min(100.0, max(0.0, ts.flesch_reading_ease(r)))))
    return out
