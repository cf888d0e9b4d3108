"""The transcriber client stage: a session's finals in order, and its partials, on the actor.

`transcribe_segments` is one task of the session's nursery (`service/session/supervisor.py`); it
owns a nursery of its own with three workers: finals one at a time and in order, partials at most
one in flight (a newer request replaces one that has not started), and a lag reporter that sends
`status` while the session is behind. Each ends by a close, never by a cancel: when the event
channel ends the finals channel and the partial slot close, the finals worker drains its channel,
and the lag reporter returns once the last final is done; then this stage sends `stopped` and
closes its frame channel. The settled `SessionConfig` comes first on the event channel, and the
workers decode with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs
import trio

from actors.model.port import DecodeOptions, Priority, Request
from actors.speech.segmenter import Segment, SpeechStart, UtteranceEnded
from actors.transcriber.actor import TranscriptionFailed
from protocol.native import (
    Final,
    Partial,
    ServerFrame,
    SpeechStarted,
    Status,
    Stopped,
    UtteranceEnd,
    Word,
)
from service.session.agreement import Agreement
from service.session.config import SessionConfig
from service.session.ports import StreamOptions, Transcriber
from service.session.segmenting import Segmented
from service.session.state import SessionState

log = logging.getLogger("chorus.session")

LAGGING_S = 1.0
CONTEXT_FINALS = 4  # earlier finals offered as context; the adapter keeps only their tail
DEGRADED_S = 5.0


# -- transcriber client --------------------------------------------------------------------


async def transcribe_segments(
    transcriber: Transcriber,
    events: trio.MemoryReceiveChannel[Segmented],
    frames: trio.MemorySendChannel[ServerFrame],
    state: SessionState,
    options: StreamOptions,
    annotate: Callable[[Final], Final],
) -> None:
    """Finals in order, one at a time; partials at most one in flight, newest wins.

    The session's settled config comes first on `events`, ahead of its audio's events; a
    session that ends before any audio sends none, and gets only `stopped`.
    """
    transcript = _Transcript()
    with events, frames:
        try:
            config = await events.receive()
        except trio.EndOfChannel:
            config = None
        if config is not None:
            if not isinstance(config, SessionConfig):
                raise AssertionError(f"the settled config comes first, not {config!r}")
            await _transcribe(
                transcriber, config, events, frames, state, options, annotate, transcript
            )
        await frames.send(
            Stopped(
                session_id=state.session_id,
                transcript=" ".join(transcript.finals),
                duration_s=round(state.received_s, 3),
                utterances=len(transcript.finals),
            )
        )


@attrs.define
class _Transcript:
    """The session's text so far: the finals worker adds to it, the partials worker reads it."""

    finals: list[str] = attrs.field(factory=list)
    partial_shown: set[int] = attrs.field(factory=set)  # utterances with partial text sent


async def _transcribe(
    transcriber: Transcriber,
    config: SessionConfig,
    events: trio.MemoryReceiveChannel[Segmented],
    frames: trio.MemorySendChannel[ServerFrame],
    state: SessionState,
    options: StreamOptions,
    annotate: Callable[[Final], Final],
    transcript: _Transcript,
) -> None:
    """Hand each event to its worker until `events` ends; every worker ends by a close: the
    finals worker when its channel is drained, the partials worker when its slot closes, the
    lag reporter when the finals are done."""
    finals_send, finals_recv = trio.open_memory_channel[Segment | UtteranceEnded](
        options.limits.queue_size
    )
    partial_slot = _Slot()
    agreements = _Agreements(enabled=options.commit_partials)
    finals_done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            _finals_worker,
            transcriber,
            finals_recv,
            frames.clone(),
            state,
            config,
            transcript,
            options,
            annotate,
            agreements,
            finals_done,
        )
        nursery.start_soon(
            _partials_worker,
            transcriber,
            partial_slot,
            frames.clone(),
            config,
            transcript,
            options,
            agreements,
        )
        nursery.start_soon(_report_lag, frames.clone(), state, finals_done)
        with finals_send:
            async for event in events:
                if isinstance(event, SpeechStart):
                    await frames.send(SpeechStarted(at=event.at))
                elif isinstance(event, Segment) and not event.final:
                    partial_slot.put(event)
                elif isinstance(event, Segment | UtteranceEnded):
                    if isinstance(event, Segment):
                        state.pending_finals.append(trio.current_time())
                        partial_slot.finalized(event.utterance)
                    await finals_send.send(event)
        partial_slot.close()


def _decode_options(
    config: SessionConfig,
    transcript: _Transcript,
    options: StreamOptions,
    final: bool,
    committed: str = "",
) -> DecodeOptions:
    return DecodeOptions(
        language=config.language,
        task=config.task,
        prompt=config.prompt,
        context=" ".join(transcript.finals[-CONTEXT_FINALS:]) or None,
        committed=committed or None,
        words=config.words and final,
        beam_size=options.final_beam_size if final else 1,
        partial=not final,
    )


async def _finals_worker(
    transcriber: Transcriber,
    finals: trio.MemoryReceiveChannel[Segment | UtteranceEnded],
    frames: trio.MemorySendChannel[ServerFrame],
    state: SessionState,
    config: SessionConfig,
    transcript: _Transcript,
    options: StreamOptions,
    annotate: Callable[[Final], Final],
    agreements: _Agreements,
    done: trio.Event,
) -> None:
    skipped: set[int] = set()
    with finals, frames:
        async for item in finals:
            if isinstance(item, UtteranceEnded):
                if item.utterance not in skipped:
                    await frames.send(UtteranceEnd(utterance=item.utterance, at=item.at))
                continue
            agreements.close(item.utterance)
            frame = await _final_frame(transcriber, item, state, config, transcript, options)
            state.pending_finals.pop(0)
            if frame is None:
                skipped.add(item.utterance)
                continue
            if frame.text:
                transcript.finals.append(frame.text)
            await frames.send(annotate(frame))
        done.set()


async def _final_frame(
    transcriber: Transcriber,
    segment: Segment,
    state: SessionState,
    config: SessionConfig,
    transcript: _Transcript,
    options: StreamOptions,
) -> Final | None:
    """The final of one utterance, decoded afresh: the drafts' committed words are not forced
    on it (that cost 0.6-1.5 WER points on the shared English set, see
    `service/session/agreement.py`)."""
    decode = _decode_options(config, transcript, options, final=True)
    try:
        result = await transcriber.transcribe(Request(segment.audio, decode), priority="final")
    except TranscriptionFailed as error:
        log.error(
            "the model failed on utterance %d of %s",
            segment.utterance,
            state.session_id,
            exc_info=error,
        )  # the detail stays here: exception text is not for clients
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
    if (
        not result.text
        and not segment.from_finalize
        and segment.utterance not in (transcript.partial_shown)
    ):
        return None  # nothing was shown and nothing was said: no empty final
    words = None
    if config.words:
        words = [
            Word(
                word=w.word,
                start=round(segment.start + w.start, 3),
                end=round(segment.start + w.end, 3),
                confidence=w.probability,
            )
            for w in result.words
        ]
    return Final(
        utterance=segment.utterance,
        text=result.text,
        start=segment.start,
        end=segment.end,
        language=result.language,
        confidence=round(result.confidence, 3),
        from_finalize=segment.from_finalize,
        flags=list(result.flags),
        words=words,
    )


class _Agreements:
    """Each open utterance's committed words: the partials worker offers drafts while their
    utterance is open; the finals worker closes an utterance when its final is requested."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._open: dict[int, Agreement] = {}

    def of(self, utterance: int) -> Agreement:
        return self._open.setdefault(utterance, Agreement())

    def close(self, utterance: int) -> None:
        for done in [u for u in self._open if u <= utterance]:
            del self._open[done]


class _Slot:
    """Holds the newest partial request; a newer one replaces one that has not started.

    Closed when the session's events end: every utterance then has its final on the way, so a
    draft still being asked for can commit nothing, and closing abandons it (the transcriber
    drops an abandoned request before the model sees it). For the same reason a draft being
    asked for is abandoned when its utterance's final is requested, and when a draft of a
    newer utterance arrives: that one's first text matters more, and under the transcriber's
    revisions budget (`TranscriberConfig.partial_share`) an old draft can wait a while.
    """

    def __init__(self) -> None:
        self.segment: Segment | None = None
        self.finalized_through = -1
        self.closed = False
        self._changed = trio.Event()
        self._asking: trio.CancelScope | None = None
        self._asking_for = -1  # the utterance of the draft being asked for

    def put(self, segment: Segment) -> None:
        if segment.utterance > self.finalized_through:
            self.segment = segment
            self._changed.set()
            if segment.utterance > self._asking_for:
                self._abandon()  # a newer utterance's first draft goes before an old draft

    def finalized(self, utterance: int) -> None:
        self.finalized_through = max(self.finalized_through, utterance)
        if self.segment is not None and self.segment.utterance <= utterance:
            self.segment = None
        if self._asking_for <= utterance:
            self._abandon()  # its final is on the way: the draft would commit nothing

    def _abandon(self) -> None:
        """Stop waiting for the draft being asked for (the transcriber drops it if it has not
        started; under a revisions budget it may wait a while)."""
        if self._asking is not None:
            self._asking.cancel()

    def close(self) -> None:
        self.closed = True
        self._changed.set()
        self._abandon()

    async def take(self) -> Segment | None:
        while self.segment is None and not self.closed:
            self._changed = trio.Event()
            await self._changed.wait()
        segment, self.segment = self.segment, None
        return segment

    @contextmanager
    def asking(self, utterance: int) -> Iterator[trio.CancelScope]:
        """The scope of one draft's request: `close`, its utterance's final, or a newer
        utterance's draft abandons it."""
        with trio.CancelScope() as scope:
            self._asking, self._asking_for = scope, utterance
            if self.closed or utterance <= self.finalized_through:
                scope.cancel()
            try:
                yield scope
            finally:
                self._asking, self._asking_for = None, -1


async def _partials_worker(
    transcriber: Transcriber,
    slot: _Slot,
    frames: trio.MemorySendChannel[ServerFrame],
    config: SessionConfig,
    transcript: _Transcript,
    options: StreamOptions,
    agreements: _Agreements,
) -> None:
    with frames:
        while (segment := await slot.take()) is not None:
            agreement = agreements.of(segment.utterance)
            committed = agreement.text if agreements.enabled else ""
            decode = _decode_options(config, transcript, options, final=False, committed=committed)
            with slot.asking(segment.utterance) as asking:
                try:
                    shown = segment.utterance in transcript.partial_shown
                    priority: Priority = "partial" if shown else "first_partial"
                    request = Request(segment.audio, decode)
                    result = await transcriber.transcribe(request, priority=priority)
                except TranscriptionFailed:
                    continue
            if asking.cancelled_caught:
                continue  # abandoned when the events ended: the slot is closed now
            if segment.utterance <= slot.finalized_through or not result.text:
                continue  # the final is on its way: this draft commits nothing
            if agreements.enabled:
                text = agreement.offer(result.text)
                stable = len(agreement.text)
            else:
                text, stable = result.text, 0
            transcript.partial_shown.add(segment.utterance)
            await frames.send(
                Partial(
                    utterance=segment.utterance,
                    revision=segment.revision,
                    text=text,
                    start=segment.start,
                    end=segment.end,
                    committed=stable,
                )
            )


async def _report_lag(
    frames: trio.MemorySendChannel[ServerFrame], state: SessionState, finals_done: trio.Event
) -> None:
    """Send `status` every second while the session is behind, and once when it catches up;
    return when the last final is done."""
    lagging = False
    with frames:
        while True:
            with trio.move_on_after(1.0):
                await finals_done.wait()
                return
            lag = state.lag_s
            if lag > LAGGING_S or lagging:
                await frames.send(
                    Status(
                        lag_s=round(lag, 3),
                        queue=len(state.pending_finals),
                        degraded=lag > DEGRADED_S,
                    )
                )
            lagging = lag > LAGGING_S
