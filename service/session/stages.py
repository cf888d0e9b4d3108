"""The stages of a session: reader, segmenter and writer (the transcriber client stage is in
`service/session/transcribing.py`), and the session state they share.

Each stage is a task in the session's nursery (`service/session/supervisor.py`) and owns exactly the
channel ends it is given, closing them with `with` on exit. A clean end is a close that ripples
down: `stop` (or a client that leaves) makes the reader close the command channel; the segmenter
flushes the open utterance and closes `segments`; the transcriber client finishes every queued
final, sends `stopped` and closes its frame channel; the writer, once every frame sender has
closed, closes the socket with 1000. A client that vanishes does not cancel the pipeline: the
writer discards what it can no longer send, so finals still reach the store.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, closing, nullcontext

import attrs
import trio

from actors.audio.decoder import AudioDecoder
from actors.audio.file_decoder import UndecodableAudio
from actors.audio.pcm import PcmDecoder
from actors.audio.stream_decoder import MAX_CHUNK_S, StreamingDecoder
from actors.model.port import SAMPLE_RATE, Samples
from actors.speech.segmenter import Event, Segmenter, SegmenterConfig
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
    Stop,
)
from service.session.ports import (
    ClientGone,
    FrameSocket,
    SessionHooks,
    SpeechDetector,
    StreamOptions,
    Vad,
)

Command = bytes | Finalize


@attrs.define
class SessionState:
    """Mutable facts of one session, shared by its stages (all on one trio thread)."""

    session_id: str
    config: Config
    audio_started: bool = False
    stop_reason: str = "client_closed"
    received_samples: int = 0
    speech_samples: int = 0  # audio the segmenter judged speech (the open utterance too)
    finals: list[str] = attrs.field(factory=list)
    # when each final still owed was asked for (trio clock), oldest first
    pending_finals: list[float] = attrs.field(factory=list)
    close_code: int = 1000
    client_gone: bool = False
    warned_misaligned: bool = False
    partial_shown: set[int] = attrs.field(factory=set)  # utterances with partial text sent
    reader: trio.CancelScope = attrs.field(factory=trio.CancelScope)  # stops taking input

    @property
    def received_s(self) -> float:
        return self.received_samples / SAMPLE_RATE

    @property
    def speech_s(self) -> float:
        return self.speech_samples / SAMPLE_RATE

    @property
    def lag_s(self) -> float:
        """How long the oldest final still owed has waited, in wall time. Not audio received
        past it: a client that sends ahead of real time (by up to the pacer's burst) would
        look 10 s behind while the model is keeping up, and admission would refuse everyone."""
        if not self.pending_finals:
            return 0.0
        return max(0.0, trio.current_time() - self.pending_finals[0])


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
    now = trio.current_time()
    deadline = now + limits.max_session_s
    idle_deadline = now + limits.idle_timeout_s
    audio_deadline = now + limits.audio_idle_timeout_s
    expired: _Expired | None = None
    with commands, frames, state.reader:
        while expired is None:
            with trio.move_on_at(min(deadline, idle_deadline, audio_deadline)):
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
                    if isinstance(item, bytes):
                        audio_deadline = trio.current_time() + limits.audio_idle_timeout_s
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
                # audio time counts too: a client faster than real time reaches it first
                if state.received_s >= limits.max_session_s:
                    expired = _Expired("session_too_long", "audio", limits.max_session_s)
                continue
            now = trio.current_time()
            if now >= deadline:
                expired = _Expired("session_too_long", "session length", limits.max_session_s)
            elif now >= idle_deadline:
                expired = _Expired("idle_timeout", "no audio or keepalive", limits.idle_timeout_s)
            else:
                expired = _Expired(
                    "audio_idle_timeout", "no audio (keepalives only)", limits.audio_idle_timeout_s
                )
        await frames.send(
            Error(
                code=expired.code,
                fatal=True,
                message=f"{expired.what} for {expired.limit:g} s: closing",
            )
        )
        state.stop_reason = expired.code


@attrs.frozen
class _Expired:
    code: str
    what: str
    limit: float


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
    vad: Vad | None = None,
) -> None:
    """Decode audio, cut utterances, and pass every event on in order.

    With `vad` (the shared VAD actor), this stage owns one stream of it, which it closes on
    exit, and awaits each chunk's speech probabilities there; without, the segmenter runs its
    own VAD inline. An undecodable `encoding=auto` stream ends the session: an `error` frame,
    then this stage closes its command channel, so the reader stops taking audio.
    """
    segmenter: Segmenter | None = None
    decoder: AudioDecoder | None = None
    pacer = Pacer(options.pace, options.pace_burst_s)
    detector = vad.open_stream() if vad is not None else None
    stream: AbstractContextManager[object] = closing(detector) if detector else nullcontext()
    with commands, events, frames, stream:
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
                # a chunk gets its wall-clock share
                decoder.max_chunk_s = pacer.chunk_allowance_s(state.received_s)
                samples = await _decode(decoder, command)
                if decoder.statistics().misaligned_frames and not state.warned_misaligned:
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
                await _push(samples, segmenter, detector, events, frames, state, hooks)
                await pacer.wait(state.received_s)
            if segmenter is not None and decoder is not None:
                flushed = await _decode(decoder, None)
                await _push(flushed, segmenter, detector, events, frames, state, hooks)
        except UndecodableAudio as error:
            state.stop_reason, state.close_code = "undecodable_audio", 1003
            state.reader.cancel()  # an error path: the reader stops waiting for the client
            await frames.send(Error(code="undecodable_audio", message=str(error), fatal=True))
        if segmenter is not None:
            for event in segmenter.close():
                await events.send(event)


CHUNK_SLACK_S = 5.0


@attrs.define
class Pacer:
    """Reads a client no faster than `pace` × real time once it is `burst_s` of audio ahead.

    A client that sends faster (silence at 100×, a replayed file) waits here; the command
    channel fills, the reader stops reading and TCP pushes back, so it cannot take the event
    loop or the model from sessions that stream in real time. `pace` 0 turns it off.
    """

    pace: float
    burst_s: float
    started: float | None = None

    def chunk_allowance_s(self, audio_s: float) -> float:
        """How much audio the next container chunk may decode to: what the pace lets this
        session read by now, plus `CHUNK_SLACK_S` (a chunk of a 1 Hz WAV or of tiny Opus
        packets would decode to many minutes at once). At most `MAX_CHUNK_S`."""
        if self.pace <= 0:
            return MAX_CHUNK_S
        elapsed = 0.0 if self.started is None else trio.current_time() - self.started
        share = elapsed * self.pace + self.burst_s - audio_s
        return min(MAX_CHUNK_S, max(0.0, share) + CHUNK_SLACK_S)

    async def wait(self, audio_s: float) -> None:
        if self.pace <= 0:
            return
        now = trio.current_time()
        if self.started is None:
            self.started = now
        due = self.started + max(0.0, audio_s - self.burst_s) / self.pace
        if due > now:
            await trio.sleep_until(due)


def make_decoder(config: Config) -> AudioDecoder:
    if config.encoding == "auto":
        return StreamingDecoder()
    return PcmDecoder(config.encoding, config.sample_rate, config.channels)


async def _decode(decoder: AudioDecoder, data: bytes | None) -> Samples:
    """Feed `data` (None: flush). A `blocking` decoder (containers: a few ms of CPU a chunk)
    runs in a worker thread; PCM decodes inline."""
    step = decoder.flush if data is None else functools.partial(decoder.feed, data)
    if decoder.blocking:
        return await trio.to_thread.run_sync(step)
    return step()


async def _push(
    samples: Samples,
    segmenter: Segmenter,
    detector: SpeechDetector | None,
    events: trio.MemorySendChannel[Event],
    frames: trio.MemorySendChannel[ServerFrame],
    state: SessionState,
    hooks: SessionHooks,
) -> None:
    if not len(samples):
        return
    notice = await hooks.audio(samples)  # e.g. `recording_stopped`: the session goes on
    if notice is not None:
        await frames.send(notice)
    state.received_samples += len(samples)
    probabilities = await detector.probabilities(samples) if detector is not None else None
    for event in segmenter.feed(samples, probabilities):
        await events.send(event)
    state.speech_samples = segmenter.speech_samples


# -- writer --------------------------------------------------------------------------------


async def write_frames(
    socket: FrameSocket,
    codec: Codec,
    frames: trio.MemoryReceiveChannel[ServerFrame],
    state: SessionState,
    hooks: SessionHooks,
    send_timeout_s: float = 30.0,
) -> None:
    """Encode and send every frame; store finals first; drop partials a final has overtaken.

    A client that stops reading (a send blocked for `send_timeout_s`) is treated as gone: the
    reader stops, the pipeline drains into the store, and nothing waits on that client again.
    """
    last_final = -1
    with frames:
        async for frame in frames:
            if isinstance(frame, Partial) and frame.utterance <= last_final:
                continue
            outgoing: list[ServerFrame] = [frame]
            if isinstance(frame, Final):
                last_final = max(last_final, frame.utterance)
                notice = await hooks.final(frame)  # e.g. `not_stored`: sent after the final
                outgoing += [notice] if notice is not None else []
            if state.client_gone:
                continue
            try:
                with trio.move_on_after(send_timeout_s) as sending:
                    for item in outgoing:
                        for message in codec.encode(item):
                            await socket.send(message)
            except ClientGone:
                state.client_gone = True
            if sending.cancelled_caught:
                state.client_gone, state.stop_reason = True, "slow_reader"
                state.reader.cancel()
        if not state.client_gone:
            try:
                await socket.close(state.close_code)
            except ClientGone:
                state.client_gone = True
