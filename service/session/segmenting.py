"""The segmenter stage: audio in, segmented events out.

`segment_audio` is one task of the session's nursery (`service/session/supervisor.py`),
started once the reader has settled the session's config (at its first audio); it owns the
command channel's receive end, the event channel's send end and a clone of the frame channel.
It decodes the client's audio (PCM inline, containers in a worker thread, read no faster than
the `Pacer` allows; a client that leaves ends the wait and what it had queued is dropped),
counts it in the session's `AudioMeter` (which it alone writes), and cuts utterances
(`actors/speech/segmenter.py`). When the commands end it flushes the decoder and the open
utterance, then closes its channels.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, closing, nullcontext

import attrs
import numpy as np
import trio

from actors.audio.decoder import AudioDecoder
from actors.audio.file_decoder import UndecodableAudio
from actors.audio.pcm import PcmDecoder
from actors.audio.stream_decoder import MAX_CHUNK_S, StreamingDecoder
from actors.model.port import SAMPLE_RATE, Samples
from actors.speech.segmenter import Segmenter
from protocol.native import Error, Finalize
from service.session.config import SessionConfig
from service.session.messages import Command, Segmented, ServerFrame
from service.session.ports import SpeechDetector, unless
from service.session.record import Session


async def segment_audio(
    session: Session,
    config: SessionConfig | None,
    commands: trio.MemoryReceiveChannel[Command],
    events: trio.MemorySendChannel[Segmented],
    frames: trio.MemorySendChannel[ServerFrame],
) -> None:
    """Decode audio, cut utterances with the settled `config`, and pass every event on in
    order. `config` is None when the session ended before any audio: nothing to cut.

    With `session.vad` (the shared VAD actor), this stage owns one stream of it, which it
    closes on exit, and awaits each chunk's speech probabilities there; without, the segmenter
    runs its own VAD inline. An undecodable `encoding=auto` stream ends the session: an `error`
    frame, then this stage closes its command channel, so the reader stops taking audio.
    """
    with commands, events, frames:
        if config is None:
            return
        cutting = _Cutting(session, config, events, frames)
        with cutting.stream:
            try:
                await _cut(cutting, commands)
                await cutting.flush()
            except UndecodableAudio as error:
                # the reader stops waiting for the client
                session.ending.stop("undecodable_audio", 1003)
                await frames.send(Error(code="undecodable_audio", message=str(error), fatal=True))
            await cutting.close()


async def _cut(cutting: _Cutting, commands: trio.MemoryReceiveChannel[Command]) -> None:
    """Take commands until they end, or until the client has gone (what it had queued is
    dropped, not paced through)."""
    held: Command | None = None  # taken while joining chunks, handled next
    while True:
        if held is not None:
            command, held = held, None
        else:
            try:
                command = await commands.receive()
            except trio.EndOfChannel:
                return
        if isinstance(command, Finalize):
            await cutting.finalize()
            if command.id is not None:  # answered once the cut's final is out (`finalized`)
                await cutting.events.send(command)
            continue
        held = await cutting.audio(command, commands)
        if cutting.session.ending.client_gone:
            return


class _Cutting:
    """One session's segmenter at work: its decoder, VAD stream, pacer and segmenter."""

    def __init__(
        self,
        session: Session,
        config: SessionConfig,
        events: trio.MemorySendChannel[Segmented],
        frames: trio.MemorySendChannel[ServerFrame],
    ) -> None:
        self.session, self.config, self.events, self.frames = session, config, events, frames
        options, vad = session.options, session.vad
        self.segmenter = Segmenter(config.segmenter)
        self.decoder = make_decoder(config)
        self.pacer = Pacer(options.pace, options.pace_burst_s)
        self.detector: SpeechDetector | None = vad.open_stream() if vad is not None else None
        self.stream: AbstractContextManager[object] = (
            closing(self.detector) if self.detector else nullcontext()
        )
        self.warned_misaligned = False

    async def audio(
        self, data: bytes, commands: trio.MemoryReceiveChannel[Command]
    ) -> Command | None:
        """Decode, count and cut one chunk (and those waiting behind it, for the shared VAD),
        then wait for the pacer; returns a command taken meanwhile that is not audio."""
        received_s = self.session.audio.received_s
        self.decoder.max_chunk_s = self.pacer.chunk_allowance_s(received_s)  # its wall share
        samples = await _decode(self.decoder, data)
        held = None
        if self.detector is not None and not self.decoder.blocking:
            samples, held = self._join_waiting(samples, commands)
        await self._warn_misaligned()
        await self._push(samples)
        await _paced(self.pacer, self.session)
        return held

    def _join_waiting(
        self, samples: Samples, commands: trio.MemoryReceiveChannel[Command]
    ) -> tuple[Samples, Command | None]:
        """The chunks already waiting go to the shared VAD in one request: a client that sends
        small chunks ahead of real time is not held to one per batch."""
        received_s = self.session.audio.received_s
        while len(samples) < JOIN_SAMPLES and self.pacer.allows(
            received_s + len(samples) / SAMPLE_RATE
        ):
            try:
                ready = commands.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if not isinstance(ready, bytes):
                return samples, ready
            samples = np.concatenate([samples, self.decoder.feed(ready)])
        return samples, None

    async def _warn_misaligned(self) -> None:
        if self.warned_misaligned or not self.decoder.statistics().misaligned_frames:
            return
        self.warned_misaligned = True
        await self.frames.send(
            Error(
                code="odd_byte_count",
                message=(
                    "a binary frame's length is not a multiple of the "
                    f"{self.config.encoding} sample size; the partial sample is kept "
                    "and joined to the next frame"
                ),
            )
        )

    async def finalize(self) -> None:
        for event in self.segmenter.finalize():
            await self.events.send(event)

    async def flush(self) -> None:
        await self._push(await _decode(self.decoder, None))

    async def close(self) -> None:
        for event in self.segmenter.close():
            await self.events.send(event)

    async def _push(self, samples: Samples) -> None:
        if not len(samples):
            return
        session = self.session
        notice = await session.hooks.audio(samples)  # e.g. `recording_stopped`: it goes on
        if notice is not None:
            await self.frames.send(notice)
        session.audio.received(len(samples))
        detector = self.detector
        probabilities = await detector.probabilities(samples) if detector is not None else None
        for event in self.segmenter.feed(samples, probabilities):
            await self.events.send(event)
        session.audio.spoken(self.segmenter.speech_samples)


CHUNK_SLACK_S = 5.0
JOIN_SAMPLES = 32_000  # at most 2 s of waiting PCM joined into one VAD request (64 VAD frames)


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

    def allows(self, audio_s: float) -> bool:
        """Whether a session that has read `audio_s` may read more now without waiting."""
        if self.pace <= 0 or self.started is None:
            return True
        return self.started + max(0.0, audio_s - self.burst_s) / self.pace <= trio.current_time()

    async def wait(self, audio_s: float) -> None:
        if self.pace <= 0:
            return
        now = trio.current_time()
        if self.started is None:
            self.started = now
        due = self.started + max(0.0, audio_s - self.burst_s) / self.pace
        if due > now:
            await trio.sleep_until(due)


async def _paced(pacer: Pacer, session: Session) -> None:
    """`pacer.wait`, ended early by a client that leaves meanwhile."""
    received_s = session.audio.received_s
    if pacer.allows(received_s):
        await pacer.wait(received_s)  # no wait: only starts the clock
        return
    await unless(session.ending.wait_client_gone, functools.partial(pacer.wait, received_s))


def make_decoder(config: SessionConfig) -> AudioDecoder:
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
