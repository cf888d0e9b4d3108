"""Tail drafts (`service/session/drafting.py`): once words are committed with their times, a
draft decodes only the uncommitted tail with half a second of committed speech before it, and the
text it shows keeps every committed word; with the real model, a long utterance's drafts stay
a few seconds long."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trio
import trio.testing
from support.audio_files import DATA, load
from support.fakes import quiet_session

from actors.model.port import (
    SAMPLE_RATE,
    DecodeOptions,
    Priority,
    Request,
    Result,
    SpeechModel,
    WordTiming,
)
from actors.speech.segmenter import Segment, SegmenterConfig, SpeechStart
from bench.figures import word_error_rate
from protocol.native import Final, Partial, ServerFrame, Status
from service.session.agreement import Agreement, TimedWord
from service.session.config import SessionConfig
from service.session.drafting import CUT_BEFORE_WORD_S, LEFT_CONTEXT_S, plan_draft, read_draft
from service.session.handle import SessionHandle
from service.session.messages import Segmented
from service.session.ports import StreamOptions
from service.session.state import Captions
from service.session.transcribing import transcribe_segments

OPTIONS = DecodeOptions(language="en", partial=True, context="Earlier final.")


def segment(seconds: float, utterance: int = 0) -> Segment:
    audio = np.arange(int(seconds * SAMPLE_RATE), dtype=np.float32)  # sample i holds i
    return Segment(utterance, False, audio, 10.0, 10.0 + seconds, 1)


def committed(*words: tuple[str, float, float] | str) -> Agreement:
    agreement = Agreement()
    agreement.committed = [
        TimedWord(word) if isinstance(word, str) else TimedWord(*word) for word in words
    ]
    return agreement


def test_a_draft_decodes_the_tail_after_some_committed_speech() -> None:
    assert LEFT_CONTEXT_S == 0.5
    agreement = committed(
        ("one", 0.2, 0.6), ("two", 0.7, 1.4), ("three", 1.5, 2.4), ("four", 2.7, 3.1)
    )
    plan = plan_draft(segment(5.0), agreement, OPTIONS)
    # "four" ends at 3.1: the audio keeps half a second before that, from "three" on
    assert plan.cut_s == 1.5 - CUT_BEFORE_WORD_S
    assert plan.request.audio[0] == int(plan.cut_s * SAMPLE_RATE)  # the tail of the audio
    assert len(plan.request.audio) == int(5.0 * SAMPLE_RATE) - int(plan.cut_s * SAMPLE_RATE)
    assert plan.request.options.committed == "three four"  # forced: they are in its audio
    assert plan.request.options.context == "Earlier final. one two"  # before the cut
    assert plan.request.options.words and plan.request.options.partial
    assert [word.word for word in plan.before] == ["one", "two"]


def test_a_draft_is_whole_until_committed_words_are_timed_and_far_enough_in() -> None:
    whole = [
        plan_draft(segment(5.0), Agreement(), OPTIONS),  # nothing committed
        plan_draft(segment(5.0), committed(("one", 0.2, 0.6), "two"), OPTIONS),  # last untimed
        plan_draft(segment(2.0), committed(("one", 0.1, 0.4), ("two", 0.5, 0.9)), OPTIONS),
    ]
    for plan in whole:
        assert plan.cut_s == 0.0 and len(plan.request.audio) == len(plan.segment.audio)
        assert plan.request.options.context == "Earlier final."  # context unchanged
        assert plan.before == ()
    assert whole[0].request.options.committed is None
    assert whole[1].request.options.committed == "one two"  # forced, as before tails
    # untimed words before the cut are fine: they go to the context
    tail = plan_draft(segment(5.0), committed("one", "two", ("three", 2.0, 2.5)), OPTIONS)
    assert tail.cut_s == 1.8 and tail.request.options.context == "Earlier final. one two"


def test_a_tail_drafts_words_are_placed_in_the_utterance_and_keep_the_committed_ones() -> None:
    agreement = committed(
        ("one", 0.2, 0.6), ("two", 0.7, 1.4), ("three", 1.5, 2.4), ("four", 2.7, 3.1)
    )
    plan = plan_draft(segment(5.0), agreement, OPTIONS)
    result = Result(
        text="three four five six",
        language="en",
        words=(
            WordTiming("three", 0.2, 1.1, 0.9),
            WordTiming("four", 1.3, 1.8, 0.9),
            WordTiming("five", 2.0, 2.6, 0.9),
            WordTiming("six", 2.7, 3.2, 0.9),
        ),
    )
    text, timings = read_draft(plan, result)
    assert text == "one two three four five six"
    assert timings[4] == TimedWord("five", 2.0 + plan.cut_s, 2.6 + plan.cut_s, 0.9)
    shown = agreement.offer(text, timings)
    assert shown == text and agreement.text == "one two three four"
    assert agreement.offer("one two three four five six seven", timings) == (
        "one two three four five six seven"
    )
    assert agreement.text == "one two three four five six"
    assert agreement.committed[5].timed  # from the draft before, which had times


def test_words_the_aligner_splits_are_timed_from_their_pieces() -> None:
    agreement = Agreement()
    pieces = [
        TimedWord("with", 0.0, 0.3),
        TimedWord("self-", 0.3, 0.6),
        TimedWord("substantial", 0.6, 1.2),
        TimedWord("fuel.", 1.2, 1.6),
    ]
    agreement.offer("with self-substantial fuel.", pieces)
    agreement.offer("with self-substantial fuel. Making", pieces)
    assert [(w.word, w.start, w.end) for w in agreement.committed] == [
        ("with", 0.0, 0.3),
        ("self-substantial", 0.3, 1.2),
        ("fuel.", 1.2, 1.6),
    ]
    untimed = Agreement()
    untimed.offer("a b c", [TimedWord("x", 0.0, 1.0)])
    untimed.offer("a b c d", [TimedWord("x", 0.0, 1.0)])
    assert [w.word for w in untimed.committed] == ["a", "b", "c"]
    assert not any(w.timed for w in untimed.committed)
    assert math.isnan(untimed.committed[0].start)


def test_captions_are_behind_only_while_someone_speaks() -> None:
    captions = Captions()
    assert captions.delay_s(12.0) == 0.0  # between utterances
    captions.open_since = 10.0
    captions.shown(9.0)  # the last utterance's text: the pause after it is owed nothing
    assert captions.delay_s(10.0) == 0.0
    assert captions.delay_s(12.0) == 2.0
    captions.shown(11.5)
    captions.shown(11.0)  # an older end never moves it back
    assert captions.delay_s(12.0) == 0.5


def test_a_long_utterances_drafts_decode_only_their_tail_and_keep_committed_words(
    tiny_model: SpeechModel,
) -> None:
    """Three clips said back to back as one 11 s utterance, drafted every 0.6 s as the
    segmenter asks: past the first seconds each draft's audio is a few seconds long, every
    shown text starts with the words committed before it, and the last draft reads the
    speech as well as a final would."""
    names = ("weather", "library", "garden")
    audio = np.concatenate([load(DATA / f"{name}.wav") for name in names])
    reference = " ".join(
        [
            "The weather today is sunny with a light breeze from the west.",
            "Please return the library books before Friday afternoon.",
            "My grandmother planted tomatoes and roses in her garden.",
        ]
    )
    agreement = Agreement()
    options = DecodeOptions(language="en", partial=True)
    lengths, shown = [], ""
    for index, end in enumerate(np.arange(0.6, len(audio) / SAMPLE_RATE, 0.6)):
        draft = Segment(0, False, audio[: int(end * SAMPLE_RATE)], 0.0, float(end), index + 1)
        plan = plan_draft(draft, agreement, options)
        before = agreement.text
        text, timings = read_draft(plan, tiny_model.transcribe_batch([plan.request])[0])
        shown = agreement.offer(text, timings)
        assert shown.startswith(before)  # committed words are never taken back
        lengths.append((end, len(plan.request.audio) / SAMPLE_RATE))
    late = [seconds for end, seconds in lengths if end >= 6.0]
    assert late and max(late) <= 6.0 and np.mean(late) <= 4.0, lengths  # tails, not the whole
    assert len(agreement.committed) >= 15
    wer = word_error_rate([(reference, shown)]).wer
    assert wer is not None and wer <= 0.2, shown


# -- the session's transcriber client with a timed fake ------------------------------------

WORD_S = 0.4  # the fake speaker says word k from k x 0.4 s to k x 0.4 + 0.3 s


class TimedSpeaker:
    """A transcriber that hears the words said in a request's audio, with their times: the
    audio's samples hold their own index in the session, so it knows where the audio lies."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, Priority]] = []  # audio start, seconds, priority

    async def transcribe(
        self, request: Request, *, priority: Priority = "final", **_: object
    ) -> Result:
        start = float(request.audio[0]) / SAMPLE_RATE
        end = start + len(request.audio) / SAMPLE_RATE
        self.calls.append((round(start, 2), round(end - start, 2), priority))
        await trio.lowlevel.checkpoint()
        words = [
            WordTiming(f"w{k}", k * WORD_S - start, k * WORD_S + 0.3 - start, 0.9)
            for k in range(int(end / WORD_S) + 1)
            if k * WORD_S >= start - 0.1 and k * WORD_S + 0.3 <= end
        ]
        return Result(" ".join(w.word for w in words), "en", words=tuple(words))


def spoken(end: float, *, final: bool = False, revision: int = 0) -> Segment:
    audio = np.arange(int(end * SAMPLE_RATE), dtype=np.float32)
    return Segment(0, final, audio, 0.0, end, revision)


def english(*, words: bool) -> SessionConfig:
    return SessionConfig(
        encoding="pcm_s16le",
        sample_rate=16000,
        channels=1,
        segmenter=SegmenterConfig(),
        language="en",
        task="transcribe",
        prompt=None,
        words=words,
    )


async def talk(options: StreamOptions) -> tuple[TimedSpeaker, list[ServerFrame]]:
    """One 8 s utterance drafted every 0.6 s, then its final."""
    speaker = TimedSpeaker()
    events_send, events = trio.open_memory_channel[Segmented](16)
    frames_send, frames_recv = trio.open_memory_channel[ServerFrame](256)
    config = english(words=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            transcribe_segments,
            quiet_session(speaker, options),
            config,
            events,
            frames_send,
        )
        for revision, end in enumerate(np.arange(0.6, 8.0, 0.6), start=1):
            await events_send.send(spoken(float(end), revision=revision))
            await trio.testing.wait_all_tasks_blocked()
        await events_send.send(spoken(8.0, final=True))
        await events_send.aclose()
    return speaker, [frame async for frame in frames_recv]


async def test_a_sessions_drafts_shrink_to_their_tail_and_its_final_reuses_them() -> None:
    speaker, frames = await talk(StreamOptions(final_beam_size=1, final_reuse_s=1.0))
    drafts = [(start, seconds) for start, seconds, priority in speaker.calls if priority != "final"]
    assert drafts[0] == (0.0, 0.6)
    assert all(seconds <= 3.0 for _, seconds in drafts[-5:]), str(drafts)  # tails, not 7 s
    partials = [f for f in frames if isinstance(f, Partial)]
    assert partials[-1].text.startswith("w0 w1 w2 w3")  # the committed words stand
    (final_call,) = [call for call in speaker.calls if call[2] == "final"]
    assert final_call[0] >= 5.0  # reused: only the last seconds decoded again
    (final,) = [f for f in frames if isinstance(f, Final)]
    assert final.text == " ".join(f"w{k}" for k in range(20))  # every word, once
    assert final.words is not None and [w.word for w in final.words] == final.text.split()
    assert final.words[3].start == pytest.approx(1.2) and final.words[19].end == 7.9


async def test_a_final_is_decoded_afresh_unless_reuse_is_asked_for() -> None:
    speaker, frames = await talk(StreamOptions(final_beam_size=1))
    (final_call,) = [call for call in speaker.calls if call[2] == "final"]
    assert final_call[:2] == (0.0, 8.0)
    (final,) = [f for f in frames if isinstance(f, Final)]
    assert final.text == " ".join(f"w{k}" for k in range(20))


class HeldRevisions:
    """Answers first drafts at once and never a revision: the captions stand still."""

    async def transcribe(
        self, request: Request, *, priority: Priority = "final", **_: object
    ) -> Result:
        if priority == "partial":
            await trio.sleep_forever()
        return Result("hello there", "en")


async def test_status_says_how_far_the_captions_are_behind(
    autojump_clock: trio.abc.Clock,
) -> None:
    session = quiet_session(HeldRevisions(), StreamOptions())
    events_send, events = trio.open_memory_channel[Segmented](16)
    frames_send, frames_recv = trio.open_memory_channel[ServerFrame](256)
    config = english(words=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            transcribe_segments,
            session,
            config,
            events,
            frames_send,
        )
        await events_send.send(SpeechStart(at=0.2))
        await events_send.send(spoken(0.8, revision=1))  # its first draft is shown
        heard = 0.0
        for revision, end in enumerate((1.6, 2.4, 3.2, 4.0), start=2):
            await trio.sleep(0.8)
            session.audio.received(int(end * SAMPLE_RATE) - int(heard * SAMPLE_RATE))
            heard = end
            await events_send.send(spoken(end, revision=revision))  # held by the model
        await trio.sleep(1.5)
        assert SessionHandle.of(session).statistics().caption_delay_s == pytest.approx(3.2)
        await events_send.send(spoken(4.0, final=True))
        await events_send.aclose()
    frames = [frame async for frame in frames_recv]
    statuses = [frame for frame in frames if isinstance(frame, Status)]
    delays = [status.caption_delay_s for status in statuses]
    assert delays == pytest.approx([2.4, 3.2])  # from 2 s behind (twice the target) on: 4 - 0.8


class SlowFirstDrafts:
    """Takes 1.5 s over an utterance's first draft and answers the rest at once."""

    async def transcribe(
        self, request: Request, *, priority: Priority = "final", **_: object
    ) -> Result:
        if priority == "first_partial":
            await trio.sleep(1.5)
        return Result("hello there", "en")


async def test_the_pause_before_an_utterance_is_not_caption_delay(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A final shown to 1.0 s, two seconds of silence, then 0.6 s of a new utterance whose
    first draft is slow: the text is 0.6 s behind the speech, not 2.6 s, and no `status`."""
    session = quiet_session(SlowFirstDrafts(), StreamOptions())
    events_send, events = trio.open_memory_channel[Segmented](16)
    frames_send, frames_recv = trio.open_memory_channel[ServerFrame](256)
    audio = np.zeros(int(0.6 * SAMPLE_RATE), dtype=np.float32)  # the new utterance so far
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transcribe_segments, session, english(words=False), events, frames_send)
        await events_send.send(SpeechStart(at=0.2))
        session.audio.received(SAMPLE_RATE)
        await events_send.send(spoken(1.0, final=True))
        await trio.sleep(2.0)
        session.audio.received(int(2.6 * SAMPLE_RATE))  # the pause and the new speech
        await events_send.send(SpeechStart(at=3.0))
        await events_send.send(Segment(1, False, audio, 3.0, 3.6, 1))
        await trio.sleep(1.2)  # its first draft is still on its way
        assert SessionHandle.of(session).statistics().caption_delay_s == pytest.approx(0.6)
        await trio.sleep(1.0)
        await events_send.send(Segment(1, True, audio, 3.0, 3.6, 2))
        await events_send.aclose()
    frames = [frame async for frame in frames_recv]
    assert [frame.text for frame in frames if isinstance(frame, Final)] == ["hello there"] * 2
    assert not [frame for frame in frames if isinstance(frame, Status)]
