"""The "Audio WebSocket API" (003) and "Live Audio Transcript" (000) seeds, `WS /ws`, as
codecs (sans-IO).

**Recordings (the default, `RecordingCodec`)**: what 003's README shows, message for message.
Client → server: `{"type": "audio", "audio": <base64>}` where the base64 is a recording (WAV,
WebM, Ogg, MP3, …; a whole one, or MediaRecorder chunks: a first chunk with the container
header, then continuation chunks); a binary frame is taken as such a payload too (000's README
shows no message format; its front end streams the recorder's chunks). Server → client, for
each audio message, in this order and with exactly these keys:

* `{"type": "status", "message": "Processing audio..."}` when it arrives, then
* `{"type": "transcription", "text": <str>, "status": "success"}` (the text of that message's
  audio only, so a client can append it; `""` for silence), or
* `{"type": "error", "message": <str>}` when it cannot be decoded or transcribed (also for a
  bad or too big message; the connection stays open).

Choices where the READMEs are silent: no message on connect (the README shows none); no
`code`, `session_id` or timing fields (a client of that backend has nowhere to show them);
`{"type": "stop"}` closes with 1000 and `{"type": "ping"}` answers `{"type": "pong"}` (kept
from the streaming dialect; neither README shows them, so no client depends on them).

**Streaming (`?stream=true`, `LiveAudioCodec`)**: Chorus's earlier `/ws`, kept for clients
written against it. Session options come from query parameters (the native names:
`sample_rate`, `encoding`, `language`, `interim`, `endpointing_ms`, …). Audio is 16-bit
little-endian PCM, 16 kHz mono unless the query says otherwise (`encoding=auto` takes a
browser's webm/opus), in binary frames or `audio` messages; `stop` and `ping` as above.
Server → client (JSON with a `type`):

* `status` {`status`, `session_id`?, `transcript`?, `message`?}: `connected` then `listening`
  when the socket opens; `speaking` when speech starts; `listening` again after each
  utterance; `stopped` (with the whole `transcript`) at the end; `lagging` (with `lag_s`) while
  the server is behind this stream;
* `transcription` {`text`, `status` (`partial` | `final`), `is_final`, `start`, `end`,
  `utterance`}; finals add `confidence`;
* `error` {`code`, `message`, `fatal`}; `pong` {}.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from protocol.codec import Inbound, ProtocolError
from protocol.dialects.common import (
    ClientMessage,
    ClientMessages,
    PingMessage,
    StopMessage,
    b64_audio,
    binary_audio,
    decode_commands,
    encoder,
)
from protocol.native import (
    Error,
    Final,
    Partial,
    Ping,
    Pong,
    Ready,
    ServerFrame,
    SpeechStarted,
    Status,
    Stop,
    Stopped,
    UtteranceEnd,
)


class AudioMessage(ClientMessage, tag="audio"):
    audio: str

    def inbound(self) -> bytes:
        return b64_audio(self.audio, "audio")


_Incoming = AudioMessage | StopMessage | PingMessage
_messages: ClientMessages[_Incoming] = ClientMessages(msgspec.json.Decoder(_Incoming))

LAGGING_S = 1.0
State = Literal["connected", "listening", "speaking", "stopped", "lagging"]


class Out(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    pass


class StatusOut(Out, tag="status"):
    status: State
    session_id: str | None = None
    transcript: str | None = None
    lag_s: float | None = None
    message: str | None = None


class TranscriptionOut(Out, tag="transcription"):
    text: str
    status: Literal["partial", "final"]
    is_final: bool
    start: float
    end: float
    utterance: int
    confidence: float | None = None


class ErrorOut(Out, tag="error"):
    code: str
    message: str
    fatal: bool


class PongOut(Out, tag="pong"):
    pass


class LiveAudioCodec:
    name = "seed_ws"

    def __init__(self) -> None:
        self.state: State = "connected"
        self._speech_at = -1.0  # start of the latest speech (a continuation starts at a cut)

    def decode(self, message: str | bytes) -> list[Inbound]:
        return decode_commands(_messages, message)

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        outs: list[Out] = []
        match frame:
            case Ready():
                outs = [StatusOut(status="connected", session_id=frame.session_id)]
                outs += self._moved("listening")
            case SpeechStarted(at=at):
                self._speech_at = max(self._speech_at, at)
                outs = self._moved("speaking")
            case UtteranceEnd(at=at):
                if self._speech_at < at:  # no newer speech has started meanwhile
                    outs = self._moved("listening")
            case Partial():
                outs = [self._transcription(frame, None)]
            case Final():
                outs = [self._transcription(frame, frame.confidence)]
            case Status(lag_s=lag):
                if lag > LAGGING_S:
                    outs = [StatusOut(status="lagging", lag_s=lag)]
                else:  # caught up again
                    outs = [StatusOut(status=self.state)]
            case Stopped():
                self.state = "stopped"
                outs = [StatusOut(status="stopped", transcript=frame.transcript)]
            case Error():
                outs = [ErrorOut(code=frame.code, message=frame.message, fatal=frame.fatal)]
            case Pong():
                outs = [PongOut()]
        return [encoder.encode(out).decode() for out in outs]

    def _moved(self, state: State) -> list[Out]:
        if state == self.state:
            return []
        self.state = state
        return [StatusOut(status=state)]

    def _transcription(self, frame: Partial | Final, confidence: float | None) -> Out:
        final = confidence is not None
        return TranscriptionOut(
            text=frame.text,
            status="final" if final else "partial",
            is_final=final,
            start=frame.start,
            end=frame.end,
            utterance=frame.utterance,
            confidence=confidence,
        )


# -- recordings (003) ------------------------------------------------------------------------

PROCESSING = "Processing audio..."


class RecordingStatus(Out, tag="status"):
    message: str


class RecordingTranscription(Out, tag="transcription"):
    text: str
    status: Literal["success"]  # no default: `omit_defaults` would drop it


class RecordingError(Out, tag="error"):
    message: str


class RecordingCodec:
    """003's messages. `decode` takes one client message (already under the route's audio
    message limit) and returns the recording's bytes, `Stop` or `Ping`; it raises
    `ProtocolError` for anything else, and for a control message over `max_control_bytes`."""

    name = "seed_ws_recordings"

    def __init__(self, max_control_bytes: int = 64 * 1024) -> None:
        self.max_control_bytes = max_control_bytes

    def decode(self, message: str | bytes) -> bytes | Stop | Ping:
        if isinstance(message, bytes):
            return binary_audio(message)
        decoded = _messages.parse(message)
        if not isinstance(decoded, AudioMessage) and len(message) > self.max_control_bytes:
            raise ProtocolError(
                "message_too_large",
                f"a {decoded.__class__.__name__} message of {len(message)} bytes is over the "
                f"{self.max_control_bytes}-byte limit for messages other than audio",
            )
        return decoded.inbound()

    def processing(self) -> str:
        return _text(RecordingStatus(message=PROCESSING))

    def transcription(self, text: str) -> str:
        return _text(RecordingTranscription(text=text, status="success"))

    def error(self, message: str) -> str:
        return _text(RecordingError(message=message))

    def pong(self) -> str:
        return _text(PongOut())


def _text(out: Out) -> str:
    return encoder.encode(out).decode()
