"""The per-connection supervisor: one nursery, one line per stage.

`run_session` owns the session's nursery and its four stages (`reader.py`, `segmenting.py`,
`transcribing.py`, `writer.py` here), joined by bounded channels sized from
`SessionLimits.queue_size` (their items: `messages.py`). Each stage takes the session's record
(`record.Session`) and its own channel ends, and keeps its own state. The writer starts first;
the reader is started with `nursery.start` and hands over the session's settled config at the
first audio, and the segmenter and the transcriber client start with it. A clean end (client
`stop`, a client that leaves, an idle or length limit) closes the first channel and the close
ripples down; an error in any stage cancels its siblings and propagates to the route, which
closes the socket with 1011. The route owns the socket; the app owns the transcriber, the VAD
actor and the hooks; the segmenter stage owns the session's VAD stream.

Memory bound per session (`memory_bound`, pinned by `tests/session/test_session.py` with tracemalloc
around a session whose transcriber never answers): each bounded channel full of its largest
item, plus what each stage holds while it works. Commands: `queue_size` + 1 raw client frames of
at most `max_frame_bytes` (16 + 1 MiB at the defaults; typical frames are 3-32 KiB). Decoding:
a PCM frame takes at most 16 bytes a byte while it decodes (8 kHz G.711: one byte becomes two
16 kHz float32 samples), a container chunk at most `MAX_CHUNK_S` of float32, twice over. The
segmenter's ring: `max_utterance_s` + 2.8 s of float32 (1.1 MB). VAD: one request out at a time,
at most `VadConfig.max_frames` (64) × 2 KB of frames, and 1.3 KB of state in the actor until
the stream closes (`tests/session/test_vad_actor.py`). Segmented events: `queue_size` + 1
utterances of at most `max_utterance_s` × 64 KB/s (0.96 MB at 15 s). The transcriber client:
its finals queue (`queue_size`), the event it is handing on, the final in flight, a partial
waiting and one in flight. Frames: `queue_size` + 3 of at most 16 KiB. At the defaults (16 a
queue, 1 MiB frames, 15 s utterances) that is 72 MB at worst, 108 MB for a client that asks
for 30 s utterances; a session that streams 0.1 s frames of speech holds a few MB.
"""

from __future__ import annotations

import trio

from actors.audio.stream_decoder import MAX_CHUNK_S
from actors.model.port import SAMPLE_RATE
from actors.speech.segmenter import MAX_ONSET_S, PRE_ROLL_S, STEP_S
from actors.speech.vad import FRAME
from actors.speech.vad_actor import VadConfig
from protocol.native import Config, Error
from service.session.config import ready_frame
from service.session.handle import SessionHandle
from service.session.messages import Command, Segmented, ServerFrame
from service.session.ports import SessionLimits
from service.session.reader import read_frames
from service.session.record import Session
from service.session.resume import RELEASED
from service.session.segmenting import segment_audio
from service.session.state import SessionStatistics
from service.session.transcribing import transcribe_segments
from service.session.writer import write_frames


async def run_session(session: Session) -> SessionStatistics:
    """Serve one connection until it ends; returns the session's last statistics.

    `session.config` is the route's, already checked (`service.session.config.check_config`).
    The caller holds the session's handle (`SessionHandle.of(session)`) before it starts.
    The writer goes first, so every frame has a reader; the reader hands over the settled
    config at the first audio, and the stages that work with it start then.
    """
    size = session.limits.queue_size
    commands_send, commands_recv = trio.open_memory_channel[Command](size)
    events_send, events_recv = trio.open_memory_channel[Segmented](size)
    frames_send, frames_recv = trio.open_memory_channel[ServerFrame](size)
    notice = await session.hooks.started(session.info())
    try:  # a session cancelled from outside (server shutdown) still closes its recording
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_frames, session, frames_recv)
            await _announce(session, notice, frames_send)
            config = await nursery.start(read_frames, session, commands_send, frames_send.clone())
            nursery.start_soon(
                segment_audio, session, config, commands_recv, events_send, frames_send.clone()
            )
            nursery.start_soon(transcribe_segments, session, config, events_recv, frames_send)
    finally:
        ending = session.ending
        # a resumable session's client that vanished may come back: its row stays open
        reason = RELEASED if session.resume.token and ending.resumable else ending.reason
        await session.hooks.ended(reason, round(session.audio.received_s, 3))
    return SessionHandle.of(session).statistics()


async def _announce(
    session: Session, notice: Error | None, frames: trio.MemorySendChannel[ServerFrame]
) -> None:
    """`ready`, then what the store said as the session began (e.g. `recording_disabled`),
    then on a resumed connection the finals the client missed (with their first `seq`),
    ahead of any other frame."""
    resume = session.resume
    await frames.send(ready_frame(session.session_id, session.config, session.options, resume))
    if notice is not None:
        await frames.send(notice)
    for final in resume.replay:
        await frames.send(final)


FLOAT32 = 4
DECODE_BYTES_PER_BYTE = 16  # 8 kHz G.711: 1 byte, 2 float32 samples at 16 kHz, and copies
FRAME_BYTES = 16 << 10  # one server frame at most: a long final with its words
VAD_REQUEST_BYTES = VadConfig().max_frames * FRAME * FLOAT32 * 2  # one request out, with copies


def memory_bound(limits: SessionLimits, config: Config) -> int:
    """The most memory one session's pipeline holds, in bytes (the module docstring adds it up)."""
    utterance = int(config.max_utterance_s * SAMPLE_RATE) * FLOAT32
    ring_s = config.max_utterance_s + MAX_ONSET_S + PRE_ROLL_S + STEP_S + 1.0
    if config.encoding == "auto":
        decoding = 2 * int(MAX_CHUNK_S * SAMPLE_RATE) * FLOAT32
    else:
        decoding = DECODE_BYTES_PER_BYTE * limits.max_frame_bytes
    queue = limits.queue_size
    return (
        (queue + 1) * limits.max_frame_bytes  # commands, and the one the reader is sending
        + decoding
        + int(ring_s * SAMPLE_RATE) * FLOAT32  # the segmenter's ring
        + VAD_REQUEST_BYTES
        + (queue + 1) * utterance  # segmented events, and the one the segmenter is sending
        + (queue + 4) * utterance  # the transcriber client's finals, partial and in flight
        + (queue + 3) * FRAME_BYTES  # frames, and the one each of three senders is sending
    )
