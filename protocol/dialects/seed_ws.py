"""The "Live Audio Transcript" / "Audio WebSocket API" seeds, `WS /ws`, as a codec (sans-IO).

Session options come from query parameters (the native names: `sample_rate`, `encoding`,
`language`, `interim`, `endpointing_ms`, …). Audio is 16-bit little-endian PCM, 16 kHz mono
unless the query says otherwise (`encoding=auto` takes a browser's webm/opus).

Client → server: binary frames are audio; text frames are JSON with a `type`:
`{"type": "audio", "audio": <base64>}`, `{"type": "stop"}` (finish, then close 1000),
`{"type": "ping"}` → `{"type": "pong"}`.

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

from protocol.codec import Inbound
from protocol.dialects.common import b64_audio, binary_audio, decode_json, encoder
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


class ClientMessage(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class AudioMessage(ClientMessage, tag="audio"):
    audio: str


class StopMessage(ClientMessage, tag="stop"):
    pass


class PingMessage(ClientMessage, tag="ping"):
    pass


_decoder = msgspec.json.Decoder(AudioMessage | StopMessage | PingMessage)

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
        if isinstance(message, bytes):
            return [binary_audio(message)]
        match decode_json(_decoder, message, "type"):
            case AudioMessage(audio=data):
                return [b64_audio(data, "audio")]
            case StopMessage():
                return [Stop()]
            case PingMessage():
                return [Ping()]
        raise AssertionError("unhandled message")

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
