"""The segmenter stage: commands in, the settled config and then segmented events out.

`segment_audio` is one task of the session's nursery (`service/session/supervisor.py`); it owns
the command channel's receive end, the event channel's send end and a clone of the frame
channel. It decodes the client's audio (PCM inline, containers in a worker thread, read no
faster than the `Pacer` allows; a client that leaves ends the wait and what it had queued is
dropped), counts it in the session's `AudioMeter`, and cuts utterances
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
    commands: trio.MemoryReceiveChannel[Command],
    events: trio.MemorySendChannel[Segmented],
    frames: trio.MemorySendChannel[ServerFrame],
) -> None:
    """Decode audio, cut utterances, and pass every event on in order.

    The settled config arrives ahead of the first audio: this stage cuts and decodes with it
    and passes it on first, to the transcriber client. A `finalize` before any audio has
    nothing to cut.

    With `session.vad` (the shared VAD actor), this stage owns one stream of it, which it closes on
    exit, and awaits each chunk's speech probabilities there; without, the segmenter runs its
    own VAD inline. An undecodable `encoding=auto` stream ends the session: an `error` frame,
    then this stage closes its command channel, so the reader stops taking audio.
    """
    segmenter: Segmenter | None = None
    decoder: AudioDecoder | None = None
    warned_misaligned = False
    options, vad, audio = session.options, session.vad, session.audio
    pacer = Pacer(options.pace, options.pace_burst_s)
    detector = vad.open_stream() if vad is not None else None
    stream: AbstractContextManager[object] = closing(detector) if detector else nullcontext()
    with commands, events, frames, stream:
        try:
            held: Command | None = None  # taken while joining chunks, handled next
            while True:
                if held is not None:
                    command, held = held, None
                else:
                    try:
                        command = await commands.receive()
                    except trio.EndOfChannel:
                        break
                if isinstance(command, SessionConfig):
                    config = command
                    segmenter = Segmenter(config.segmenter)
                    decoder = make_decoder(config)
                    await events.send(config)
                    continue
                if segmenter is None or decoder is None:
                    continue
                if isinstance(command, Finalize):
                    for event in segmenter.finalize():
                        await events.send(event)
                    continue
                # a chunk gets its wall-clock share
                decoder.max_chunk_s = pacer.chunk_allowance_s(audio.received_s)
                samples = await _decode(decoder, command)
                if detector is not None and not decoder.blocking:
                    # the chunks already waiting go to the shared VAD in one request: a client
                    # that sends small chunks ahead of real time is not held to one per batch
                    while len(samples) < JOIN_SAMPLES and pacer.allows(
                        audio.received_s + len(samples) / SAMPLE_RATE
                    ):
                        try:
                            ready = commands.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        if not isinstance(ready, bytes):
                            held = ready
                            break
                        samples = np.concatenate([samples, decoder.feed(ready)])
                if decoder.statistics().misaligned_frames and not warned_misaligned:
                    warned_misaligned = True
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
                await _push(session, samples, segmenter, detector, events, frames)
                await _paced(pacer, session)
                if session.ending.client_gone:
                    break  # what a client that left had queued is dropped, not paced through
            if segmenter is not None and decoder is not None:
                flushed = await _decode(decoder, None)
                await _push(session, flushed, segmenter, detector, events, frames)
        except UndecodableAudio as error:
            # the reader stops waiting for the client
            session.ending.stop("undecodable_audio", 1003)
            await frames.send(Error(code="undecodable_audio", message=str(error), fatal=True))
        if segmenter is not None:
            for event in segmenter.close():
                await events.send(event)


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


async def _push(
    session: Session,
    samples: Samples,
    segmenter: Segmenter,
    detector: SpeechDetector | None,
    events: trio.MemorySendChannel[Segmented],
    frames: trio.MemorySendChannel[ServerFrame],
) -> None:
    if not len(samples):
        return
    notice = await session.hooks.audio(samples)  # e.g. `recording_stopped`: the session goes on
    if notice is not None:
        await frames.send(notice)
    session.audio.received(len(samples))
    probabilities = await detector.probabilities(samples) if detector is not None else None
    for event in segmenter.feed(samples, probabilities):
        await events.send(event)
    session.audio.spoken(segmenter.speech_samples)
