"""The four stages of a session: reader, segmenter, transcriber client, writer.

Each stage is a task in the session's nursery (`service/session.py`) and owns exactly the
channel ends it is given, closing them with `with` on exit. A clean end is a close that ripples
down: `stop` (or a client that leaves) makes the reader close the command channel; the segmenter
flushes the open utterance and closes `segments`; the transcriber client finishes every queued
final, sends `stopped` and closes its frame channel; the writer, once every frame sender has
closed, closes the socket with 1000. A client that vanishes does not cancel the pipeline: the
writer discards what it can no longer send, so finals still reach the store.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np
import trio

from actors.audio import PcmDecoder
from actors.decode import UndecodableAudio
from actors.decode_stream import StreamingDecoder
from actors.model_api import SAMPLE_RATE, DecodeOptions, Request, Samples
from actors.segmenter import Event, Segment, Segmenter, SegmenterConfig, SpeechStart, UtteranceEnded
from actors.transcriber import TranscriptionFailed
from protocol.codec import Codec, ProtocolError
from protocol.native import (
    Config,
    Error,
    Final,
    Finalize,
    KeepAlive,
    Partial,
    Ping,
    Pong,
    ServerFrame,
    SpeechStarted,
    Status,
    Stop,
    Stopped,
    UtteranceEnd,
    Word,
)
from service.pipeline import ClientGone, FrameSocket, SessionHooks, StreamOptions, Transcriber

Command = bytes | Finalize
LAGGING_S = 1.0
DEGRADED_S = 5.0


@attrs.define
class SessionState:
    """Mutable facts of one session, shared by its stages (all on one trio thread)."""

    session_id: str
    config: Config
    audio_started: bool = False
    stop_reason: str = "client_closed"
    received_samples: int = 0
    finals: list[str] = attrs.field(factory=list)
    pending_finals: list[float] = attrs.field(factory=list)  # end times, oldest first
    close_code: int = 1000
    client_gone: bool = False
    warned_misaligned: bool = False
    partial_shown: set[int] = attrs.field(factory=set)  # utterances with partial text sent
    reader: trio.CancelScope = attrs.field(factory=trio.CancelScope)  # stops taking input

    @property
    def received_s(self) -> float:
        return self.received_samples / SAMPLE_RATE

    @property
    def lag_s(self) -> float:
        if not self.pending_finals:
            return 0.0
        return max(0.0, self.received_s - self.pending_finals[0])


# -- reader --------------------------------------------------------------------------------


async def read_frames(
    socket: FrameSocket,
    codec: Codec,
    commands: trio.MemorySendChannel[Command],
    frames: trio.MemorySendChannel[ServerFrame],
    state: SessionState,
    options: StreamOptions,
    reconfigure: Callable[[Config], ServerFrame | None],
) -> None:
    limits = options.limits
    deadline = trio.current_time() + limits.max_session_s
    idle_deadline = trio.current_time() + limits.idle_timeout_s
    with commands, frames, state.reader:
        while True:
            with trio.move_on_at(min(deadline, idle_deadline)):
                try:
                    message = await socket.receive()
                except ClientGone:
                    state.client_gone = True
                    return
                if _too_large(message, limits.max_frame_bytes, limits.max_message_bytes):
                    kind = "binary frame" if isinstance(message, bytes) else "text message"
                    await frames.send(
                        Error(
                            code="frame_too_large",
                            message=(
                                f"{kind} of {len(message)} bytes is over the limit ("
                                f"{limits.max_frame_bytes} binary, "
                                f"{limits.max_message_bytes} text)"
                            ),
                        )
                    )
                    continue
                try:
                    items = codec.decode(message)
                except ProtocolError as error:
                    await frames.send(
                        Error(code=error.code, message=error.message, fatal=error.fatal)
                    )
                    if error.fatal:
                        state.stop_reason, state.close_code = "protocol_error", 1008
                        return
                    continue
                for item in items:
                    if isinstance(item, bytes | KeepAlive):
                        idle_deadline = trio.current_time() + limits.idle_timeout_s
                    if isinstance(item, bytes | Finalize):
                        state.audio_started = state.audio_started or isinstance(item, bytes)
                        try:
                            await commands.send(item)
                        except trio.BrokenResourceError:
                            return  # the segmenter gave up on this stream
                    elif isinstance(item, Stop):
                        state.stop_reason = "stop"
                        return
                    elif isinstance(item, Ping):
                        await frames.send(Pong(id=item.id))
                    elif isinstance(item, Config):
                        answer = reconfigure(item)
                        if answer is not None:
                            await frames.send(answer)
                continue
            too_long = trio.current_time() >= deadline
            expired = "session_too_long" if too_long else "idle_timeout"
            what = "session length" if too_long else "no audio or keepalive"
            limit = limits.max_session_s if too_long else limits.idle_timeout_s
            await frames.send(
                Error(
                    code=expired,
                    fatal=True,
                    message=(f"{what} for {limit:g} s: closing"),
                )
            )
            state.stop_reason = expired
            return


def _too_large(message: str | bytes, frame_limit: int, text_limit: int) -> bool:
    if isinstance(message, bytes):
        return len(message) > frame_limit
    return len(message) > text_limit


# -- segmenter -----------------------------------------------------------------------------


async def segment_audio(
    commands: trio.MemoryReceiveChannel[Command],
    events: trio.MemorySendChannel[Event],
    frames: trio.MemorySendChannel[ServerFrame],
    state: SessionState,
    options: StreamOptions,
    hooks: SessionHooks,
) -> None:
    """Decode audio, cut utterances, and pass every event on in order.

    An undecodable `encoding=auto` stream ends the session: an `error` frame, then this stage
    closes its command channel, so the reader stops taking audio.
    """
    segmenter: Segmenter | None = None
    decoder: AudioDecoder | None = None
    with commands, events, frames:
        try:
            async for command in commands:
                if segmenter is None or decoder is None:
                    config = state.config
                    segmenter = Segmenter(
                        SegmenterConfig(
                            endpointing_ms=config.endpointing_ms,
                            max_utterance_s=config.max_utterance_s,
                            partial_interval_s=options.partial_interval_s,
                            interim=config.interim,
                        )
                    )
                    decoder = make_decoder(config)
                if isinstance(command, Finalize):
                    for event in segmenter.finalize():
                        await events.send(event)
                    continue
                samples = await _decode(decoder, command)
                if getattr(decoder, "misaligned_frames", 0) and not state.warned_misaligned:
                    state.warned_misaligned = True
                    await frames.send(
                        Error(
                            code="odd_byte_count",
                            message=(
                                "a binary frame's length is not a multiple of the "
                                f"{config.encoding} sample size; the partial sample is kept "
                                "and joined to the next frame"
                            ),
                        )
                    )
                await _push(samples, segmenter, events, state, hooks)
            if segmenter is not None and decoder is not None:
                await _push(await _decode(decoder, None), segmenter, events, state, hooks)
        except UndecodableAudio as error:
            state.stop_reason, state.close_code = "undecodable_audio", 1003
            state.reader.cancel()  # an error path: the reader stops waiting for the client
            await frames.send(Error(code="undecodable_audio", message=str(error), fatal=True))
        if segmenter is not None:
            for event in segmenter.close():
                await events.send(event)


AudioDecoder = PcmDecoder | StreamingDecoder


def make_decoder(config: Config) -> AudioDecoder:
    if config.encoding == "auto":
        return StreamingDecoder()
    return PcmDecoder(config.encoding, config.sample_rate)


async def _decode(decoder: AudioDecoder, data: bytes | None) -> Samples:
    """PCM decodes inline; containers decode in a worker thread (a few ms of CPU a chunk)."""
    if isinstance(decoder, PcmDecoder):
        return decoder.feed(data) if data is not None else decoder.flush()
    if data is None:
        return await trio.to_thread.run_sync(decoder.flush)
    return await trio.to_thread.run_sync(decoder.feed, data)


async def _push(
    samples: Samples,
    segmenter: Segmenter,
    events: trio.MemorySendChannel[Event],
    state: SessionState,
    hooks: SessionHooks,
) -> None:
    if not len(samples):
        return
    await hooks.audio(samples)
    state.received_samples += len(samples)
    for event in segmenter.feed(samples):
        await events.send(event)


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
                finals_finished,
            )
            nursery.start_soon(
                _partials_worker, transcriber, partial_slot, frames.clone(), state, options
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
                            state.pending_finals.append(event.end)
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


def _decode_options(state: SessionState, options: StreamOptions, final: bool) -> DecodeOptions:
    config = state.config
    language = None if config.language == "auto" else config.language.split("-")[0]
    if not options.multilingual:
        language = "en"
    return DecodeOptions(
        language=language,
        task=config.task,
        prompt=config.prompt,
        words=config.words and final,
        beam_size=options.final_beam_size if final else 1,
    )


async def _finals_worker(
    transcriber: Transcriber,
    finals: trio.MemoryReceiveChannel[Segment | UtteranceEnded],
    frames: trio.MemorySendChannel[ServerFrame],
    state: SessionState,
    options: StreamOptions,
    annotate: Callable[[Final], Final],
    finished: trio.Event,
) -> None:
    skipped: set[int] = set()
    with finals, frames:
        async for item in finals:
            if isinstance(item, UtteranceEnded):
                if item.utterance not in skipped:
                    await frames.send(UtteranceEnd(utterance=item.utterance, at=item.at))
                continue
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
    transcriber: Transcriber, segment: Segment, state: SessionState, options: StreamOptions
) -> Final | None:
    request = Request(segment.audio, _decode_options(state, options, final=True))
    try:
        result = await transcriber.transcribe(request, priority="final")
    except TranscriptionFailed as error:
        return Final(
            utterance=segment.utterance,
            text="",
            start=segment.start,
            end=segment.end,
            language="",
            confidence=0.0,
            from_finalize=segment.from_finalize,
            flags=[f"model_error: {error}"],
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
) -> None:
    with frames:
        while (segment := await slot.take()) is not None:
            request = Request(segment.audio, _decode_options(state, options, final=False))
            try:
                result = await transcriber.transcribe(request, priority="partial")
            except TranscriptionFailed:
                continue
            if segment.utterance > slot.finalized_through and result.text:
                state.partial_shown.add(segment.utterance)
                await frames.send(
                    Partial(
                        utterance=segment.utterance,
                        revision=segment.revision,
                        text=result.text,
                        start=segment.start,
                        end=segment.end,
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


# -- writer --------------------------------------------------------------------------------


async def write_frames(
    socket: FrameSocket,
    codec: Codec,
    frames: trio.MemoryReceiveChannel[ServerFrame],
    state: SessionState,
    hooks: SessionHooks,
) -> None:
    """Encode and send every frame; store finals first; drop partials a final has overtaken."""
    last_final = -1
    with frames:
        async for frame in frames:
            if isinstance(frame, Partial) and frame.utterance <= last_final:
                continue
            if isinstance(frame, Final):
                last_final = max(last_final, frame.utterance)
                await hooks.final(frame)
            if state.client_gone:
                continue
            try:
                for message in codec.encode(frame):
                    await socket.send(message)
            except ClientGone:
                state.client_gone = True
        if not state.client_gone:
            try:
                await socket.close(state.close_code)
            except ClientGone:
                state.client_gone = True


def samples_to_pcm16(samples: Samples) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0) * 32767.0
    return bytes(np.round(clipped).astype("<i2").tobytes())
