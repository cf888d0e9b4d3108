"""The pure parts of resuming (`service/session/resume.py`): which finals are replayed, where
the clock and the `seq` go on, how much re-sent audio is dropped, and what the query may say."""

from __future__ import annotations

import numpy as np
import pytest

from actors.speech.segmenter import Segment, Segmenter, SegmenterConfig
from actors.store.schema import StoredUtterance
from protocol.codec import NativeCodec
from protocol.native import Final, Pong
from service.policy.refusal import Refusal
from service.session.resume import Resume, ResumeRequest, drop_resent, resumed_from
from service.session.state import Ending

TOKEN = "t" * 43


def stored(index: int, start: float, end: float) -> StoredUtterance:
    return StoredUtterance(index, start, end, f"final {index}", "en", 0.9)


FINALS = ((4, stored(0, 0.0, 2.0)), (9, stored(1, 3.0, 5.5)), (12, stored(2, 6.0, 7.25)))


def test_the_finals_after_the_clients_last_seq_are_replayed_with_their_seq() -> None:
    resume = resumed_from(TOKEN, "s1", FINALS, after_seq=9)
    assert [(final.seq, final.utterance, final.text) for final in resume.replay] == [
        (12, 2, "final 2")
    ]
    assert resume.last_seq == 12 and resume.next_utterance == 3
    assert resume.audio_start == 7.25  # the clock goes on at the last stored final's end
    assert resume.transcript == ("final 0", "final 1", "final 2")
    assert resume.speech_s == pytest.approx(2.0 + 2.5 + 1.25)  # for admission's speech share
    assert resume.resend_s == pytest.approx(7.25 - 5.5)  # the client re-sends from 5.5


def test_a_client_that_saw_everything_gets_nothing_again() -> None:
    resume = resumed_from(TOKEN, "s1", FINALS, after_seq=20)
    assert resume.replay == () and resume.last_seq == 20 and resume.resend_s == 0.0


def test_a_client_that_saw_no_final_re_sends_from_the_start() -> None:
    resume = resumed_from(TOKEN, "s1", FINALS, after_seq=0)
    assert [final.seq for final in resume.replay] == [4, 9, 12]
    assert resume.resend_s == 7.25
    empty = resumed_from(TOKEN, "s1", (), after_seq=5)
    assert (empty.last_seq, empty.next_utterance, empty.audio_start) == (5, 0, 0.0)


def test_finals_stored_without_seq_count_as_seen() -> None:
    resume = resumed_from(TOKEN, "s1", ((None, stored(0, 0.0, 2.0)),), after_seq=0)
    assert resume.replay == () and resume.resend_s == 0.0


def test_re_sent_audio_is_dropped_across_chunks() -> None:
    chunk = np.arange(10, dtype=np.float32)
    kept, left = drop_resent(chunk, 25)
    assert len(kept) == 0 and left == 15
    kept, left = drop_resent(chunk, 4)
    assert list(kept) == list(range(4, 10)) and left == 0


@pytest.mark.parametrize(
    "query",
    [
        {"resume": "short"},
        {"resume": "x" * 200},
        {"resume": "a b" * 10},
        {"resume": TOKEN, "after_seq": "-1"},
        {"resume": TOKEN, "after_seq": "1e3"},
        {"resume": TOKEN, "after_seq": "٣"},  # a digit, but not ASCII
        {"resume": TOKEN, "after_seq": str(2**31)},
        {"after_seq": "3"},
    ],
)
def test_malformed_resume_queries_are_refused_early(query: dict[str, str]) -> None:
    with pytest.raises(Refusal) as refused:
        ResumeRequest.from_query(query)
    assert refused.value.status_code == 400


def test_a_resume_query_is_read() -> None:
    assert ResumeRequest.from_query({}) is None
    assert ResumeRequest.from_query({"resume": TOKEN}) == ResumeRequest(TOKEN, 0)
    assert ResumeRequest.from_query({"resume": TOKEN, "after_seq": "17"}) == ResumeRequest(
        TOKEN, 17
    )


def test_the_codec_goes_on_after_the_seq_it_is_given_and_keeps_a_replayed_one() -> None:
    codec = NativeCodec(seq=12)
    replayed = Final(seq=9, utterance=1, text="", start=0, end=1, language="en", confidence=1)
    assert '"seq":9' in str(codec.encode(replayed)[0])
    assert '"seq":13' in str(codec.encode(Pong())[0])


def test_a_resumed_segmenter_goes_on_in_audio_time_and_utterances() -> None:
    segmenter = Segmenter(SegmenterConfig(endpointing_ms=100, interim=False))
    segmenter.resume_at(16000 * 7, utterance=3)
    speech = np.full(16000, 1.0, np.float32)
    frames = len(speech) // 512
    events = list(segmenter.feed(speech, np.ones(frames, np.float32)))
    events += list(segmenter.close())
    (segment,) = [event for event in events if isinstance(event, Segment)]
    assert segment.utterance == 3 and 7.0 <= segment.start < segment.end <= 8.0
    with pytest.raises(ValueError, match="before it has any audio"):
        segmenter.resume_at(0, 0)


@pytest.mark.parametrize(
    ("reason", "client_code", "resumable"),
    [
        ("client_closed", None, True),  # vanished
        ("client_closed", 1006, True),
        ("client_closed", 1001, True),
        ("client_closed", 1000, False),  # closed on purpose
        ("server_shutdown", None, True),  # drained: resume elsewhere
        ("stop", None, False),
        ("idle_timeout", None, False),
    ],
)
def test_which_ends_a_client_may_resume(
    reason: str, client_code: int | None, resumable: bool
) -> None:
    ending = Ending()
    ending.left(client_code)
    ending.ended(reason)
    assert ending.resumable is resumable


def test_a_token_never_reaches_a_log() -> None:
    secret = "s" * 43
    request = ResumeRequest.from_query({"resume": secret, "after_seq": "3"})
    assert request is not None and request.token == secret
    for value in (request, Resume(token=secret), resumed_from(secret, "sess", (), 0)):
        assert secret not in repr(value) and secret not in str(value)
