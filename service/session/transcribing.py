"""The transcriber client stage: a session's finals in order, and its partials, on the actor.

`transcribe_segments` is one task of the session's nursery (`service/session/supervisor.py`); it
owns a nursery of its own with three workers: finals one at a time and in order, partials at most
one in flight (a newer request replaces one that has not started), and a lag reporter that sends
`status` while the session is behind. When its event channel ends it waits for the last final,
sends `stopped` and closes its frame channel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from actors.model.port import DecodeOptions, Priority, Request
from actors.speech.segmenter import Event, Segment, SpeechStart, UtteranceEnded
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
from service.session.ports import StreamOptions, Transcriber
from service.session.stages import SessionState

log = logging.getLogger("chorus.session")

LAGGING_S = 1.0
CONTEXT_FINALS = 4  # earlier finals offered as context; the adapter keeps only their tail
DEGRADED_S = 5.0


# -- transcriber client --------------------------------------------------------------------


async def transcribe_segments(
    transcriber: Transcriber,
    events: trio.MemoryReceiveChannel[Event],
    frames: trio.MemorySendChannel[ServerFrame],
    state: SessionState,
    options: StreamOptions,
    annotate: Callable[[Final], Final],
) -> None:
    """Finals in order, one at a time; partials at most one in flight, newest wins."""
    finals_send, finals_recv = trio.open_memory_channel[Segment | UtteranceEnded](
        options.limits.queue_size
    )
    partial_slot = _Slot()
    agreements = _Agreements(enabled=options.commit_partials)
    finals_finished = trio.Event()
    with events, frames:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                _finals_worker,
                transcriber,
                finals_recv,
                frames.clone(),
                state,
                options,
                annotate,
                agreements,
                finals_finished,
            )
            nursery.start_soon(
                _partials_worker,
                transcriber,
                partial_slot,
                frames.clone(),
                state,
                options,
                agreements,
            )
            nursery.start_soon(_report_lag, frames.clone(), state)
            with finals_send:
                async for event in events:
                    if isinstance(event, SpeechStart):
                        await frames.send(SpeechStarted(at=event.at))
                    elif isinstance(event, Segment) and not event.final:
                        partial_slot.put(event)
                    else:
                        if isinstance(event, Segment):
                            state.pending_finals.append(trio.current_time())
                            partial_slot.finalized(event.utterance)
                        await finals_send.send(event)
            partial_slot.close()
            await finals_finished.wait()
            nursery.cancel_scope.cancel()  # the lag reporter and a stale partial end here
        await frames.send(
            Stopped(
                session_id=state.session_id,
                transcript=" ".join(state.finals),
                duration_s=round(state.received_s, 3),
                utterances=len(state.finals),
            )
        )


def _decode_options(
    state: SessionState, options: StreamOptions, final: bool, committed: str = ""
) -> DecodeOptions:
    config = state.config
    language = None if config.language == "auto" else config.language.split("-")[0]
    if not options.multilingual:
        language = "en"
    return DecodeOptions(
        language=language,
        task=config.task,
        prompt=config.prompt,
        context=" ".join(state.finals[-CONTEXT_FINALS:]) or None,
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
    options: StreamOptions,
    annotate: Callable[[Final], Final],
    agreements: _Agreements,
    finished: trio.Event,
) -> None:
    skipped: set[int] = set()
    with finals, frames:
        async for item in finals:
            if isinstance(item, UtteranceEnded):
                if item.utterance not in skipped:
                    await frames.send(UtteranceEnd(utterance=item.utterance, at=item.at))
                continue
            agreements.close(item.utterance)
            frame = await _final_frame(transcriber, item, state, options)
            state.pending_finals.pop(0)
            if frame is None:
                skipped.add(item.utterance)
                continue
            if frame.text:
                state.finals.append(frame.text)
            await frames.send(annotate(frame))
        finished.set()


async def _final_frame(
    transcriber: Transcriber,
    segment: Segment,
    state: SessionState,
    options: StreamOptions,
) -> Final | None:
    """The final of one utterance, decoded afresh: the drafts' committed words are not forced
    on it (that cost 0.6-1.5 WER points on the shared English set, see
    `service/session/agreement.py`)."""
    decode = _decode_options(state, options, final=True)
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
        and segment.utterance not in (state.partial_shown)
    ):
        return None  # nothing was shown and nothing was said: no empty final
    words = None
    if state.config.words:
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
    """Holds the newest partial request; a newer one replaces one that has not started."""

    def __init__(self) -> None:
        self.segment: Segment | None = None
        self.finalized_through = -1
        self.closed = False
        self._changed = trio.Event()

    def put(self, segment: Segment) -> None:
        if segment.utterance > self.finalized_through:
            self.segment = segment
            self._changed.set()

    def finalized(self, utterance: int) -> None:
        self.finalized_through = max(self.finalized_through, utterance)
        if self.segment is not None and self.segment.utterance <= utterance:
            self.segment = None

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def take(self) -> Segment | None:
        while self.segment is None and not self.closed:
            self._changed = trio.Event()
            await self._changed.wait()
        segment, self.segment = self.segment, None
        return segment


async def _partials_worker(
    transcriber: Transcriber,
    slot: _Slot,
    frames: trio.MemorySendChannel[ServerFrame],
    state: SessionState,
    options: StreamOptions,
    agreements: _Agreements,
) -> None:
    with frames:
        while (segment := await slot.take()) is not None:
            agreement = agreements.of(segment.utterance)
            committed = agreement.text if agreements.enabled else ""
            decode = _decode_options(state, options, final=False, committed=committed)
            try:
                shown = segment.utterance in state.partial_shown
                priority: Priority = "partial" if shown else "first_partial"
                request = Request(segment.audio, decode)
                result = await transcriber.transcribe(request, priority=priority)
            except TranscriptionFailed:
                continue
            if segment.utterance <= slot.finalized_through or not result.text:
                continue  # the final is on its way: this draft commits nothing
            if agreements.enabled:
                text = agreement.offer(result.text)
                stable = len(agreement.text)
            else:
                text, stable = result.text, 0
            state.partial_shown.add(segment.utterance)
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


async def _report_lag(frames: trio.MemorySendChannel[ServerFrame], state: SessionState) -> None:
    """Send `status` every second while the session is behind, and once when it catches up."""
    lagging = False
    with frames:
        while True:
            await trio.sleep(1.0)
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
