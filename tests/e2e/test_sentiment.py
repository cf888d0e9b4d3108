"""`actors.model.sentiment`: TextBlob's polarity and subjectivity, the label and its confidence."""

from __future__ import annotations

import pytest

from actors.model.sentiment import POLARITY_BAND, analyze, annotate_sentiment, load_sentiment
from protocol.native import Final


async def test_the_lexicon_loads_without_any_download() -> None:
    await load_sentiment()  # TextBlob's bundled Pattern lexicon; no NLTK corpus is fetched
    assert analyze("good").polarity > 0


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Thank you so much, this is wonderful and I love it!", "positive"),
        ("This is terrible, I hate waiting and the service is awful.", "negative"),
        ("The invoice number is four five six.", "neutral"),
    ],
)
def test_labels(text: str, label: str) -> None:
    sentiment = analyze(text)
    assert sentiment.type == label
    assert -1.0 <= sentiment.polarity <= 1.0 and 0.0 <= sentiment.subjectivity <= 1.0
    assert 0.5 <= sentiment.confidence <= 1.0


def test_confidence_follows_the_documented_formula() -> None:
    positive = analyze("I love this wonderful product!")
    assert positive.confidence == round(min(1.0, 0.5 + abs(positive.polarity) / 2), 3)
    plain = analyze("The meeting is on Tuesday.")
    assert plain.polarity == 0.0 and plain.subjectivity == 0.0 and plain.confidence == 1.0
    weak = analyze("The long meeting.")  # a weak opinion (polarity -0.05) stays neutral
    assert 0 < abs(weak.polarity) <= POLARITY_BAND and weak.type == "neutral"
    assert weak.confidence == round(1.0 - abs(weak.polarity) / (2 * POLARITY_BAND), 3)
    edge = analyze("An old car.")  # polarity 0.1 exactly: the band includes its edge
    assert edge.polarity == POLARITY_BAND and (edge.type, edge.confidence) == ("neutral", 0.5)


def test_negation_flips_polarity() -> None:
    assert analyze("This is good.").polarity > 0 > analyze("This is not good.").polarity


def test_annotate_sets_sentiment_on_finals_with_text_only() -> None:
    final = Final(
        utterance=0, text="Great job, thanks!", start=0, end=1, language="en", confidence=0.9
    )
    annotated = annotate_sentiment(final)
    assert annotated.sentiment is not None and annotated.sentiment.type == "positive"
    assert annotated.text == final.text and final.sentiment is None  # the input is unchanged
    empty = Final(utterance=1, text="", start=1, end=2, language="en", confidence=0.0)
    assert annotate_sentiment(empty).sentiment is None
