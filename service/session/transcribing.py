"""The transcriber client stage: a session's finals in order, and its partials, on the actor.

`transcribe_segments` is one task of the session's nursery (`service/session/supervisor.py`); it
owns a nursery of its own with three workers: finals one at a time and in order, drafts at most
one in flight (`service/session/drafting.py`: a newer request replaces one that has not
started), and a lag reporter that sends `status` while the session is behind, in its finals or
in its captions. Each ends by a close, never by a cancel: when the event
channel ends the finals channel and the partial slot close, the finals worker drains its channel,
and the lag reporter returns once the last final is done; then this stage sends `stopped` and
closes its frame channel. It starts once the reader has settled the session's config, and the
workers decode with that `SessionConfig`. What the workers share (`_Client`: the text so far,
the committed words, the partial slot) is this stage's alone; of the session's live parts it
writes only its `FinalsMeter` (finals owed, captions), and reads the segmenter's `AudioMeter`.
Of what the app shares, it adds each final's wait to `Session.final_waits` (one call, once the
final is handed to the writer), which admission's latency guard reads.
"""

from __future__ import annotations

import logging

import attrs
import trio

from actors.model.port import DecodeOptions, Result, WordTiming
from actors.speech.segmenter import Segment, SpeechStart, UtteranceEnded
from actors.transcriber.actor import TranscriptionFailed
from protocol.native import (
    Final,
    Finalize,
    Finalized,
    ServerFrame,
    SpeechStarted,
    SpeechStopped,
    Status,
    Stopped,
    UtteranceEnd,
    Word,
)
from service.session.agreement import Agreement, TimedWord
from service.session.config import SessionConfig
from service.session.drafting import (
    Agreements,
    DraftMaker,
    DraftSettings,
    DraftSlot,
    draft_partials,
    plan_final,
    read_draft,
)
from service.session.lead_in import LeadIn
from service.session.messages import Segmented
from service.session.record import Session

log = logging.getLogger("chorus.session")

LAGGING_S = 1.0
CONTEXT_FINALS = 4  # earlier finals offered as context; the adapter keeps only their tail
DEGRADED_S = 5.0
CAPTIONS_LATE = 2.0  # captions this many times the target behind the speech: `status` says so


async def transcribe_segments(
    session: Session,
    config: SessionConfig | None,
    events: trio.MemoryReceiveChannel[Segmented],
    frames: trio.MemorySendChannel[ServerFrame],
) -> None:
    """Finals in order, one at a time; partials at most one in flight, newest wins.

    The workers decode with the session's settled `config`; a session that ended before any
    audio (`config` None) has no events and gets only `stopped`.
    """
    transcript = _Transcript(finals=list(session.resume.transcript))  # a resumed session's
    with events, frames:
        if config is not None:
            await _transcribe(_Client(session, config, transcript), events, frames)
        await frames.send(
            Stopped(
                session_id=session.session_id,
                transcript=" ".join(transcript.finals),
                duration_s=round(session.audio.received_s, 3),
                utterances=len(transcript.finals),
            )
        )


@attrs.define
class _Transcript:
    """The session's text so far: the finals worker adds to it, the partials worker reads it."""

    finals: list[str] = attrs.field(factory=list)
    partial_shown: set[int] = attrs.field(factory=set)  # utterances with partial text sent

    def context(self, *, but_last: bool = False) -> str | None:
        """The earlier finals offered to the model as context (`but_last`: those before the
        last, when the last is a final's lead-in)."""
        finals = self.finals[:-1] if but_last else self.finals
        return " ".join(finals[-CONTEXT_FINALS:]) or None


class _Client:
    """This stage's own state, which its workers share and nothing outside it sees: the
    settled config, the text so far, each open utterance's committed words, the partial slot."""

    def __init__(self, session: Session, config: SessionConfig, transcript: _Transcript) -> None:
        self.session, self.config, self.transcript = session, config, transcript
        self.agreements = Agreements(enabled=session.options.commit_partials)
        self.slot = DraftSlot()
        self.finals_done = trio.Event()
        self.lead_in = LeadIn(session.options.final_lead_in)  # the finals worker's own

    def decode_options(self, *, final: bool) -> DecodeOptions:
        config, options = self.config, self.session.options
        decode = DecodeOptions(
            language=config.language,
            task=config.task,
            context=self.transcript.context(),
            words=config.words and final,
            beam_size=options.final_beam_size if final else 1,
            partial=not final,
        )
        return self.with_vocabulary(decode)

    def with_vocabulary(self, decode: DecodeOptions) -> DecodeOptions:
        """`decode` with the session's vocabulary now (a `configure` may have changed it)."""
        vocabulary = self.session.vocabulary.current(self.config.keyterms, self.config.prompt)
        return vocabulary.apply(decode)

    def drafts(self) -> DraftMaker:
        settings = DraftSettings(
            options=self.decode_options(final=False),
            caption_target_s=self.session.options.caption_target_s,
            words=self.config.words,
        )
        return DraftMaker(
            settings, self.agreements, self.transcript.context, vocabulary=self.with_vocabulary
        )


async def _transcribe(
    client: _Client,
    events: trio.MemoryReceiveChannel[Segmented],
    frames: trio.MemorySendChannel[ServerFrame],
) -> None:
    """Hand each event to its worker until `events` ends; every worker ends by a close: the
    finals worker when its channel is drained, the partials worker when its slot closes, the
    lag reporter when the finals are done."""
    session = client.session
    finals_send, finals_recv = trio.open_memory_channel[Segment | UtteranceEnded | Finalize](
        session.limits.queue_size
    )
    shown = client.transcript.partial_shown
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_finals_worker, client, finals_recv, frames.clone())
        nursery.start_soon(
            draft_partials, session, client.slot, frames.clone(), client.drafts(), shown
        )
        nursery.start_soon(_report_lag, session, frames.clone(), client.finals_done)
        with finals_send:
            await _route(client, events, finals_send, frames)
        client.slot.close()


async def _route(
    client: _Client,
    events: trio.MemoryReceiveChannel[Segmented],
    finals: trio.MemorySendChannel[Segment | UtteranceEnded | Finalize],
    frames: trio.MemorySendChannel[ServerFrame],
) -> None:
    """Each event to its place: speech started to the client, a draft's segment to the slot
    (newest wins), a final's segment, an utterance's end and a `finalize` that asked for its
    `finalized` to the finals worker, in order. A final's segment is also `speech_stopped`
    to the client at once, when the route asks for it."""
    captions, slot = client.session.finals.captions, client.slot
    stopped = client.session.options.speech_stopped
    async for event in events:
        if isinstance(event, SpeechStart):
            captions.open_since = event.at
            await frames.send(SpeechStarted(at=event.at))
        elif isinstance(event, Segment) and not event.final:
            slot.put(event)
        else:
            if isinstance(event, Segment):
                captions.open_since = None
                client.session.finals.asked()
                slot.finalized(event.utterance)
                if stopped:
                    await frames.send(SpeechStopped(utterance=event.utterance, at=event.end))
            await finals.send(event)


async def _finals_worker(
    client: _Client,
    finals: trio.MemoryReceiveChannel[Segment | UtteranceEnded | Finalize],
    frames: trio.MemorySendChannel[ServerFrame],
) -> None:
    session, transcript = client.session, client.transcript
    skipped: set[int] = set()
    with finals, frames:
        async for item in finals:
            if isinstance(item, Finalize):
                await frames.send(Finalized(id=item.id))
                continue
            if isinstance(item, UtteranceEnded):
                if item.utterance not in skipped:
                    await frames.send(UtteranceEnd(utterance=item.utterance, at=item.at))
                continue
            frame = await _final_frame(client, item, client.agreements.close(item.utterance))
            if frame is None:
                skipped.add(item.utterance)
            else:
                if frame.text:
                    transcript.finals.append(frame.text)
                session.finals.captions.shown(frame.end)
                await frames.send(session.annotate(frame))
            # out (or judged empty): its wait, asked to handed to the writer, for admission
            session.final_waits.record(trio.current_time(), session.finals.answered())
        client.finals_done.set()


async def _final_frame(
    client: _Client, segment: Segment, agreement: Agreement | None
) -> Final | None:
    """The final of one utterance. With `options.final_reuse_s`, the drafts' committed words
    that end that long before the utterance does stand and only the rest is decoded
    (`drafting.plan_final`); else, or with none to reuse, it is decoded afresh: forcing every
    committed word on it costs accuracy (`service/session/agreement.py`; measured:
    docs/benchmarks.md)."""
    session = client.session
    decode = client.decode_options(final=True)
    plan = plan_final(segment, agreement, decode, session.options.final_reuse_s)
    if not plan.before:  # decoded afresh: after the previous final, where that helps
        context = client.transcript.context(but_last=True)
        plan = attrs.evolve(plan, request=client.lead_in.request(segment, decode, context))
    try:
        result = await session.transcriber.transcribe(plan.request, priority="final")
        if plan.before:  # words reused from the drafts come first
            text, timings = read_draft(plan, result)
            result = attrs.evolve(result, text=text, words=tuple(_timings(timings)))
    except TranscriptionFailed as error:
        client.lead_in.remember(segment, "")
        log.error(
            "the model failed on utterance %d of %s",
            segment.utterance,
            session.session_id,
            exc_info=error,
        )  # the detail stays here: exception text is not for clients
        return _failed(segment)
    client.lead_in.remember(segment, result.text)
    shown = segment.utterance in client.transcript.partial_shown
    if not result.text and not segment.from_finalize and not shown:
        return None  # nothing was shown and nothing was said: no empty final
    return Final(
        utterance=segment.utterance,
        text=result.text,
        start=segment.start,
        end=segment.end,
        language=result.language,
        confidence=round(result.confidence, 3),
        from_finalize=segment.from_finalize,
        flags=list(result.flags),
        words=_words(segment, result) if client.config.words else None,
    )


def _failed(segment: Segment) -> Final:
    """The final of an utterance the model failed on: empty, and flagged."""
    return Final(
        utterance=segment.utterance,
        text="",
        start=segment.start,
        end=segment.end,
        language="",
        confidence=0.0,
        from_finalize=segment.from_finalize,
        flags=["model_error: the model failed on this utterance"],
    )


def _words(segment: Segment, result: Result) -> list[Word]:
    """The result's word timings, in the session's audio time."""
    return [
        Word(
            word=w.word,
            start=round(segment.start + w.start, 3),
            end=round(segment.start + w.end, 3),
            confidence=w.probability,
        )
        for w in result.words
    ]


async def _report_lag(
    session: Session,
    frames: trio.MemorySendChannel[ServerFrame],
    finals_done: trio.Event,
) -> None:
    """Send `status` every second while the session is behind (a final owed for over
    `LAGGING_S`, or captions more than twice the target behind the speech), and once when it
    catches up; return when the last final is done."""
    lagging = False
    meter, target_s = session.finals, session.options.caption_target_s
    with frames:
        while True:
            with trio.move_on_after(1.0):
                await finals_done.wait()
                return
            lag = meter.lag_s
            caption = meter.captions.delay_s(session.audio.received_s)
            behind = lag > LAGGING_S or caption > CAPTIONS_LATE * target_s
            if behind or lagging:
                await frames.send(
                    Status(
                        lag_s=round(lag, 3),
                        queue=meter.queue,
                        degraded=lag > DEGRADED_S,
                        caption_delay_s=round(caption, 3),
                    )
                )
            lagging = behind


def _timings(words: list[TimedWord]) -> list[WordTiming]:
    return [WordTiming(w.word, w.start, w.end, w.probability) for w in words if w.timed]
