"""`WS /ws` for the 003/000 seeds: each `audio` message is a recording, answered in turn.

`serve_recordings` is the route's whole life, in the request's task: a slot under the session
caps (`SessionGate`, refused before the upgrade; no rate-limit token and no share of the live
capacity: its recordings pay as uploads, below), then one loop that reads a message, answers
`status` ("Processing audio..."), decodes and transcribes it, and answers `transcription` or
`error` (`protocol.dialects.seed_ws.RecordingCodec`). One message at a time: the next waits in
hypercorn's queue (one message under `service.serving`, which then stops reading the socket).
The connection counts as a live session (`/health`'s `sessions` and `active_connections`, the
session caps, a drain on shutdown cancels its loop and closes it with 1012).

Each recording is an upload (issue 21: recordings on the live queue delayed other tenants'
live sessions by tens of seconds; docs/security.md): it takes
one of the app's upload slots (`service.routes.uploads.Uploads`: per client and in all) and one
rate-limit token, as a `POST` upload does, or is answered with an `error` saying when to retry;
it decodes on the uploads' decoding threads and goes on the shared transcriber at `background`
priority, so live sessions keep their latency.

Decoding goes through the guarded decoders only (declared rates 8-192 kHz, decoded length
capped, PCM decoded in bounded pieces): a message that starts a container (`sniff_container`)
opens a new `StreamingDecoder`, which keeps the header for the MediaRecorder chunks that
follow; a recording that decodes to more than `StreamingDecoder`'s per-chunk cap (60 s), or
whose container cannot be streamed (FLAC, AIFF), is decoded again whole by `FileDecoder` (30 s
pieces, flat memory) with `Limits.max_upload_s` as its cap, and cannot be continued. A message
that starts no container continues the last recording, or is an `error` when there is none. The
transcription is that message's audio only, cut at pauses, at most 4 utterances in flight
(`actors.transcriber.files`).

Limits: a message over `Limits.max_audio_message_bytes` (base64 text or binary) is answered
with `error` and dropped; other text messages keep the 64 KiB JSON limit. A client sends
nothing between recordings, so after its first recording the connection waits
`Limits.audio_idle_timeout_s` (600 s), not the streaming routes' 30 s, before it is closed
(1000, after an `error`); before it, `Limits.idle_timeout_s`. Pings do not count as audio.
Memory per connection: the message being handled (≤ 25 MiB of text, ≤ 19 MiB decoded from
base64, ≤ 60 s or one 30 s piece of float32 audio, 4 utterances in flight) plus hypercorn's
part, bounded by `service.serving` (one queued, one waiting or being buffered, counted in bytes,
no compression: 75 MiB at 25 MiB messages; lower `CHORUS_MAX_AUDIO_MESSAGE_BYTES` where that
matters; `docs/security.md`).

Not done here (the streaming routes do it): recording to the store and `/v1/sessions`.

It shares an admitted connection's life with `serve_session` (`service/session/admission.py`:
`turn_away`, `admitted`, `LiveSessions.holding`), not its session: admission there spends a
rate-limit token and a share of the live capacity per connection (here: per recording, as an
upload), accepts the `token` subprotocol, opens a store row, closes 1011 on an error, and runs
the streaming pipeline with its own limits (frame and message sizes, idle and audio-idle
timeouts counted from audio and keepalives, not from the last answer).
"""

from __future__ import annotations

import logging

import trio
from starlette.websockets import WebSocket

from actors.audio.demux import sniff_container
from actors.audio.file_decoder import UndecodableAudio
from actors.audio.stream_decoder import StreamingDecoder
from actors.model.port import SAMPLE_RATE
from actors.transcriber.actor import TranscriberClosed, TranscriptionFailed
from actors.transcriber.files import FileOptions, transcribe_file, transcribe_samples
from protocol.codec import ProtocolError
from protocol.dialects.seed_ws import RecordingCodec
from protocol.native import Ping, Stop
from service.policy.caller import Caller
from service.policy.limits import Limits
from service.policy.refusal import Refusal
from service.routes.uploads import UploadError, Uploads, check_admission
from service.session.admission import SessionServices, admitted, draining, turn_away
from service.session.handle import SessionHandle
from service.session.ports import ClientGone, Transcriber
from service.session.record import new_session_id
from service.session.sockets import StarletteSocket
from service.session.state import AudioMeter, Ending

log = logging.getLogger("chorus.recordings")

_STREAMED_AGAIN = frozenset({"too_long", "unsupported_codec"})  # then FileDecoder decodes


class Recording:
    """One connection's decoding state: the open recording's `StreamingDecoder`, if any."""

    def __init__(self, limits: Limits, decodes: trio.CapacityLimiter) -> None:
        self.max_seconds = limits.max_upload_s
        self.decodes = decodes
        self._stream: StreamingDecoder | None = None
        self.samples = 0

    async def transcribe(self, transcriber: Transcriber, data: bytes) -> str:
        """The text of `data`'s audio; raises `UndecodableAudio`, `TranscriptionFailed`."""
        options = FileOptions(priority="background", max_seconds=self.max_seconds)
        fresh = sniff_container(data[:12]) is not None
        if fresh:
            self._stream = StreamingDecoder()
        elif self._stream is None:
            raise UndecodableAudio(
                "not_audio",
                "not a recording: audio must start with a WAV, WebM, Ogg or MP3 header "
                f"(it starts with {data[:12].hex(' ')})",
            )
        stream = self._stream
        try:
            samples = await trio.to_thread.run_sync(stream.feed, data, limiter=self.decodes)
        except UndecodableAudio as error:
            self._stream = None
            if not fresh or error.kind not in _STREAMED_AGAIN:
                raise
            whole = await transcribe_file(transcriber, data, options, decode_limiter=self.decodes)
            self.samples += round(whole.duration_s * SAMPLE_RATE)
            return whole.text
        self.samples += len(samples)
        transcript = await transcribe_samples(transcriber, samples, options)
        return transcript.text


async def serve_recordings(
    websocket: WebSocket, services: SessionServices, uploads: Uploads
) -> None:
    """Admit, accept and answer one connection's recordings until it closes."""
    client = Caller.of(websocket).client
    try:
        if (refusal := draining(services)) is not None:
            raise refusal
        admission = services.gate.admit(client)
    except Refusal as refusal:
        await turn_away(websocket, "/ws", client, refusal)
        return
    ending, audio = Ending(), AudioMeter()
    handle = SessionHandle(new_session_id(), ending, audio, streaming=False)
    turn = _Turn(services, uploads, client, Recording(uploads.limits, uploads.decodes))
    async with admitted(websocket, admission) as socket:
        try:
            await websocket.accept()
            with services.live.holding(handle):
                with ending.reading:  # the handle's `stop` (a drain on shutdown) cancels it
                    await _answer(socket, turn, uploads.limits, ending, audio)
                await socket.close(ending.close_code)
        except ClientGone:
            pass


class _Turn:
    """What one connection's recordings are answered with: its client's identity (whose upload
    slots and rate limit each recording takes), the app's services and uploads, and the
    connection's `Recording`."""

    def __init__(
        self, services: SessionServices, uploads: Uploads, client: str, recording: Recording
    ) -> None:
        self.services, self.uploads, self.client = services, uploads, client
        self.recording = recording
        self.recordings = 0  # recordings that decoded to audio

    async def answer(self, data: bytes, codec: RecordingCodec) -> str:
        """The `transcription` or `error` message for the recording `data`, transcribed as an
        upload: under an upload slot, after a rate-limit token, at `background` priority."""
        samples = self.recording.samples
        try:
            with self.uploads.slots.take(self.client, self.uploads.limits):
                await check_admission(self.services, self.client)
                answer = await _transcribed(self.services.transcriber, self.recording, data, codec)
            self.recordings += self.recording.samples > samples  # junk does not count
            return answer
        except UploadError as refused:
            retry = "" if refused.retry_after is None else f"; retry in {refused.retry_after} s"
            return codec.error(f"Recording refused: {refused.message}{retry}")


async def _answer(
    socket: StarletteSocket, turn: _Turn, limits: Limits, ending: Ending, audio: AudioMeter
) -> None:
    codec = RecordingCodec(limits.max_message_bytes)
    deadline = trio.current_time() + limits.max_session_s
    quiet_since = trio.current_time()  # the last recording's answer: pings do not count
    while True:
        # a connection that has sent no recording yet holds its slot only the idle timeout
        idle_s = limits.audio_idle_timeout_s if turn.recordings else limits.idle_timeout_s
        message: str | bytes | None = None
        with trio.move_on_at(min(deadline, quiet_since + idle_s)):
            message = await socket.receive()
        if message is None:
            break
        recordings = turn.recordings
        await _handle(socket, codec, turn, limits, message, ending, audio)
        if ending.reason == "stop":
            return
        if turn.recordings != recordings:
            quiet_since = trio.current_time()
    if trio.current_time() >= deadline:
        ending.ended("session_too_long")
        await socket.send(codec.error(f"Session longer than {limits.max_session_s:g} s"))
    else:
        ending.ended("idle_timeout")
        await socket.send(codec.error(f"No audio for {idle_s:g} s: closing"))


async def _handle(
    socket: StarletteSocket,
    codec: RecordingCodec,
    turn: _Turn,
    limits: Limits,
    message: str | bytes,
    ending: Ending,
    audio: AudioMeter,
) -> None:
    limit = limits.max_audio_message_bytes
    if len(message) > limit:
        await socket.send(
            codec.error(f"Audio message of {len(message)} bytes is over the {limit}-byte limit")
        )
        return
    try:
        item = codec.decode(message)
    except ProtocolError as error:
        await socket.send(codec.error(error.message))
        return
    del message  # the base64 text: only the decoded bytes are kept from here
    match item:
        case Stop():
            ending.ended("stop")
        case Ping():
            await socket.send(codec.pong())
        case bytes():
            await socket.send(codec.processing())
            before = turn.recording.samples
            answer = await turn.answer(item, codec)
            audio.received(turn.recording.samples - before)
            await socket.send(answer)


async def _transcribed(
    transcriber: Transcriber, recording: Recording, data: bytes, codec: RecordingCodec
) -> str:
    """The `transcription` message for `data`, or the `error` message saying why not."""
    try:
        return codec.transcription(await recording.transcribe(transcriber, data))
    except UndecodableAudio as error:
        return codec.error(f"Could not decode the audio: {error.reason}")
    except TranscriptionFailed:
        log.exception("the model failed on a /ws recording")
        return codec.error("The model failed to transcribe this audio")
    except TranscriberClosed:
        return codec.error("The server is shutting down")
