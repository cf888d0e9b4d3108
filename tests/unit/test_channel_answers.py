"""`ChannelAnswers` (`service/session/channel_answers.py`): a multichannel session answers a
`finalize` with an `id` once, after every channel it targeted, and each `configure` once."""

from __future__ import annotations

from protocol.native import Configured, Error, Final, Finalized
from service.session.channel_answers import ChannelAnswers


def test_a_finalize_is_answered_once_when_its_last_channel_answers() -> None:
    answers = ChannelAnswers(3)
    both = answers.ask("both", {0, 2})
    again = answers.ask("both", {2})  # the same id again: a wait of its own
    assert (both, again) == (0, 1)  # the channels see tokens, never the client's id
    assert answers.answered(2, Finalized(id=both)) == []
    assert answers.answered(2, Finalized(id=again)) == [Finalized(id="both")]
    assert answers.answered(0, Finalized(id=both)) == [Finalized(id="both")]
    assert answers.answered(0, Finalized(id=both)) is None  # not waited for: not an answer
    final = Final(utterance=0, text="hi", start=0.0, end=1.0, language="en", confidence=0.9)
    assert answers.answered(0, final) is None  # the channel's own frame, tagged elsewhere


def test_a_channel_that_stops_holds_no_finalize_up() -> None:
    answers = ChannelAnswers(2)
    token = answers.ask(7, {0, 1})
    assert answers.answered(1, Finalized(id=token)) == []
    assert answers.stopped(0) == [Finalized(id=7)]
    assert answers.stopped(0) == []


def test_each_configure_is_answered_by_the_first_channel_to_answer_it() -> None:
    answers = ChannelAnswers(2)
    first = Configured(keyterms=["Chorus"], prompt=None)
    refused = Error(code="invalid_vocabulary", message="too many key terms")
    assert answers.answered(1, first) == [first]
    assert answers.answered(1, refused) == [refused]  # channel 1 is ahead: its answers go
    assert answers.answered(0, first) == []
    assert answers.answered(0, refused) == []
    assert answers.answered(0, first) == [first]  # a third configure: channel 0 answers first
    assert answers.answered(1, first) == []
    other = Error(code="frame_too_large", message="no")
    assert answers.answered(0, other) is None
