"""The "Real-Time Call Intelligence" seed, `WS /ws/{client_id}`, as a codec (sans-IO).

Session options come from query parameters (the native names: `sample_rate`, `language`,
`interim`, `endpointing_ms`, …); `sentiment` is on by default here (`sentiment=false` turns it
off). Audio is 16-bit little-endian PCM, 16 kHz mono unless `sample_rate` says otherwise.

Client → server (JSON with a `type`; binary frames are taken as audio too):

* `{"type": "audio_chunk", "audio_data": <base64 PCM>, "timestamp": <any>}`;
* `{"type": "ping", ...}` → `pong`;
* `{"type": "stop"}` or `{"type": "end_call"}`: finish pending finals, `stopped`, close 1000.

Server → client (JSON with a `type`; `timestamp` is the server's ISO 8601 UTC time of sending):

* `connected` {`client_id`, `session_id`, `sample_rate`, `timestamp`} when the call opens;
* `transcription` {`client_id`, `text`, `is_final`, `start`, `end`, `utterance`,
  `timestamp`, `sentiment`}: `sentiment` is {`type` (`positive` / `negative` / `neutral`),
  `confidence`, `polarity`, `subjectivity`} on finals (see `actors.sentiment`) and null on
  partials or when sentiment is off; finals add `confidence` and `language`;
* `pong` {`timestamp`}; `stopped` {`client_id`, `session_id`, `transcript`, `duration`};
* `error` {`code`, `message`, `fatal`}.
"""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.codec import Inbound
from protocol.dialects.common import Clock, b64_audio, binary_audio, decode_json, encoder, utc_now
from protocol.native import (
    Error,
    Final,
    Partial,
    Ping,
    Pong,
    Ready,
    Sentiment,
    ServerFrame,
    Stop,
    Stopped,
)


class ClientMessage(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class AudioChunk(ClientMessage, tag="audio_chunk"):
    audio_data: str
    timestamp: Any = None


class PingMessage(ClientMessage, tag="ping"):
    timestamp: Any = None


class StopMessage(ClientMessage, tag="stop"):
    pass


class EndCall(ClientMessage, tag="end_call"):
    pass


_decoder = msgspec.json.Decoder(AudioChunk | PingMessage | StopMessage | EndCall)


class Out(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    pass


class Connected(Out, tag="connected"):
    client_id: str
    session_id: str
    sample_rate: int
    timestamp: str


class Transcription(Out, tag="transcription"):
    client_id: str
    text: str
    is_final: bool
    start: float
    end: float
    utterance: int
    timestamp: str
    sentiment: Sentiment | None  # always present: null on partials
    confidence: float | None = None
    language: str | None = None


class PongOut(Out, tag="pong"):
    timestamp: str


class StoppedOut(Out, tag="stopped"):
    client_id: str
    session_id: str
    transcript: str
    duration: float


class ErrorOut(Out, tag="error"):
    code: str
    message: str
    fatal: bool


class CallCodec:
    name = "seed_call"

    def __init__(self, client_id: str, *, clock: Clock = utc_now) -> None:
        self.client_id = client_id
        self.clock = clock

    def decode(self, message: str | bytes) -> list[Inbound]:
        if isinstance(message, bytes):
            return [binary_audio(message)]
        match decode_json(_decoder, message, "type"):
            case AudioChunk(audio_data=data):
                return [b64_audio(data, "audio_data")]
            case PingMessage():
                return [Ping()]
            case StopMessage() | EndCall():
                return [Stop()]
        raise AssertionError("unhandled message")

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        out: Out | None = None
        match frame:
            case Ready():
                out = Connected(
                    client_id=self.client_id,
                    session_id=frame.session_id,
                    sample_rate=frame.sample_rate,
                    timestamp=self.clock(),
                )
            case Partial() | Final():
                out = Transcription(
                    client_id=self.client_id,
                    text=frame.text,
                    is_final=isinstance(frame, Final),
                    start=frame.start,
                    end=frame.end,
                    utterance=frame.utterance,
                    timestamp=self.clock(),
                    sentiment=frame.sentiment if isinstance(frame, Final) else None,
                    confidence=frame.confidence if isinstance(frame, Final) else None,
                    language=frame.language if isinstance(frame, Final) else None,
                )
            case Pong():
                out = PongOut(timestamp=self.clock())
            case Stopped():
                out = StoppedOut(
                    client_id=self.client_id,
                    session_id=frame.session_id,
                    transcript=frame.transcript,
                    duration=frame.duration_s,
                )
            case Error():
                out = ErrorOut(code=frame.code, message=frame.message, fatal=frame.fatal)
        return [] if out is None else [encoder.encode(out).decode()]
