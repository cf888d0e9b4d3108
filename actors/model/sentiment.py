"""Sentiment of a final transcript: TextBlob's polarity and subjectivity, plus a label.

Pure functions, no task of their own: the session's finals worker calls `annotate_sentiment`
(as `run_session(annotate=...)`) on each final before it is stored and sent, so the call must
be cheap. It is, once the lexicon is loaded (measured: docs/benchmarks.md). Loading it (importing
TextBlob, which imports NLTK, then reading the Pattern lexicon that ships inside TextBlob; no
corpus download) takes most of a second, so a route that will use sentiment first calls
`await load_sentiment()`, which does that once in a worker thread.

Definitions (TextBlob's `PatternAnalyzer`): `polarity` in [-1, 1] (negative to positive) and
`subjectivity` in [0, 1] (objective to subjective). The label:

* `positive` when polarity > `POLARITY_BAND` (0.1), `negative` when < -0.1, else `neutral`;
* `confidence` for a positive or negative label is 0.5 + |polarity| / 2 (0.55 at the band's
  edge, 1.0 at ±1); for `neutral` it is 1 - |polarity| / (2 · 0.1) (1.0 for text with no
  opinion words, 0.5 at the band's edge). Rounded to 3 places, like polarity and subjectivity.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import msgspec
import trio

from protocol.native import Final, Sentiment

POLARITY_BAND = 0.1

Label = Literal["positive", "negative", "neutral"]


@functools.cache
def _analyzer() -> Any:
    from textblob.en.sentiments import PatternAnalyzer

    analyzer = PatternAnalyzer()
    analyzer.analyze("warm")  # reads the lexicon now, not on the first live final
    return analyzer


async def load_sentiment() -> None:
    """Import TextBlob and read its lexicon in a worker thread (once per process)."""
    await trio.to_thread.run_sync(_analyzer)


def analyze(text: str) -> Sentiment:
    """Polarity, subjectivity, label and confidence of `text` (see the module docstring)."""
    scores = _analyzer().analyze(text)
    polarity = float(scores.polarity)
    subjectivity = float(scores.subjectivity)
    label: Label
    if polarity > POLARITY_BAND:
        label, confidence = "positive", 0.5 + abs(polarity) / 2
    elif polarity < -POLARITY_BAND:
        label, confidence = "negative", 0.5 + abs(polarity) / 2
    else:
        label, confidence = "neutral", 1.0 - abs(polarity) / (2 * POLARITY_BAND)
    return Sentiment(
        type=label,
        confidence=round(min(confidence, 1.0), 3),
        polarity=round(polarity, 3),
        subjectivity=round(subjectivity, 3),
    )


def annotate_sentiment(frame: Final) -> Final:
    """Return `frame` with `sentiment` set (an empty final gets none)."""
    if not frame.text:
        return frame
    return msgspec.structs.replace(frame, sentiment=analyze(frame.text))
