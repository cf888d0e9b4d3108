"""When a final is decoded after the previous one (`service/session/lead_in.py`): the rule,
on segments made here. The adapter's side (the lead-in forced and left out of the result) has
its real-model test in tests/e2e/test_lead_in_model.py."""

from __future__ import annotations

import numpy as np
import pytest

from actors.model.port import DecodeOptions
from actors.speech.segmenter import Segment
from service.session.lead_in import GAP_FILL_S, MAX_GAP_S, MAX_LEAD_S, MAX_TOTAL_S, LeadIn

RATE = 16000
OPTIONS = DecodeOptions(language="en", beam_size=5, context="all of it so far")


def segment(
    utterance: int, start: float, end: float, *, narrowband: bool = True, **extra: object
) -> Segment:
    audio = np.full(round((end - start) * RATE), utterance + 1, dtype=np.float32)
    return Segment(utterance, True, audio, start, end, narrowband=narrowband, **extra)  # type: ignore[arg-type]


def test_the_first_final_has_no_lead_in() -> None:
    first = segment(0, 0.5, 3.0)
    request = LeadIn().request(first, OPTIONS, "earlier")
    assert request.audio is first.audio and request.options == OPTIONS


def test_a_phone_line_final_is_decoded_after_the_previous_one() -> None:
    leads = LeadIn()
    first, second = segment(0, 0.5, 3.0), segment(1, 3.6, 5.0)
    leads.remember(first, " it was natural therefore ")
    request = leads.request(second, OPTIONS, "earlier")
    assert request.options.lead_in == "it was natural therefore"
    assert request.options.context == "earlier"  # the finals before the lead-in, not it again
    gap = round(0.6 * RATE)
    assert len(request.audio) == len(first.audio) + gap + len(second.audio)
    assert request.options.lead_in_s == pytest.approx((len(first.audio) + gap) / RATE)
    assert np.all(request.audio[: len(first.audio)] == 1)  # the previous utterance
    assert np.all(request.audio[len(first.audio) : len(first.audio) + gap] == 0)  # the pause
    assert np.all(request.audio[len(first.audio) + gap :] == 2)  # then this one


def test_a_long_pause_is_filled_with_at_most_a_second() -> None:
    leads = LeadIn()
    first, second = segment(0, 0.0, 2.0), segment(1, 2.0 + MAX_GAP_S, 4.0 + MAX_GAP_S)
    leads.remember(first, "one")
    request = leads.request(second, OPTIONS, None)
    assert request.options.lead_in_s == pytest.approx(2.0 + GAP_FILL_S)


@pytest.mark.parametrize(
    ("previous", "this", "why"),
    [
        ((0.0, 2.0), (2.0 + MAX_GAP_S + 0.1, 5.0), "a pause long enough to end a thought"),
        ((0.0, MAX_LEAD_S + 0.5), (MAX_LEAD_S + 1.0, MAX_LEAD_S + 3.0), "a long utterance"),
        ((0.0, MAX_LEAD_S), (MAX_LEAD_S + 1.0, MAX_TOTAL_S + 0.5), "no room in the window"),
    ],
)
def test_no_lead_in_where_it_would_not_pay(
    previous: tuple[float, float], this: tuple[float, float], why: str
) -> None:
    leads = LeadIn()
    leads.remember(segment(0, *previous), "before")
    request = leads.request(segment(1, *this), OPTIONS, None)
    assert request.options.lead_in is None, why


def test_wideband_finals_have_none_unless_asked() -> None:
    first, second = segment(0, 0.5, 3.0, narrowband=False), segment(1, 3.6, 5.0, narrowband=False)
    narrowband, always, never = LeadIn("narrowband"), LeadIn("always"), LeadIn("never")
    for leads in (narrowband, always, never):
        leads.remember(first, "before")
    assert narrowband.request(second, OPTIONS, None).options.lead_in is None
    assert always.request(second, OPTIONS, None).options.lead_in == "before"
    phone = segment(1, 3.6, 5.0)
    assert never.request(phone, OPTIONS, None).options.lead_in is None


def test_an_empty_or_forced_final_leads_nothing_in() -> None:
    leads = LeadIn()
    leads.remember(segment(0, 0.5, 3.0), "   ")
    assert leads.request(segment(1, 3.6, 5.0), OPTIONS, None).options.lead_in is None
    leads.remember(segment(1, 3.6, 5.0, from_finalize=True), "the client cut here")
    assert leads.request(segment(2, 5.2, 6.0), OPTIONS, None).options.lead_in is None


def test_committed_words_keep_their_own_request() -> None:
    leads = LeadIn()
    leads.remember(segment(0, 0.5, 3.0), "before")
    committed = DecodeOptions(language="en", committed="already said")
    request = leads.request(segment(1, 3.6, 5.0), committed, None)
    assert request.options == committed
