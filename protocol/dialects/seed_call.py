"""The "Real-Time Call Intelligence" seed, `WS /ws/{client_id}`, as a codec (sans-IO).

Its README is the contract: every message it shows is accepted, and answered in exactly its
shape. What it does not show is sent only when the client asks in the query string:
`?interim=true` for partials, `?details=true` for everything else.

Session options come from query parameters (the native names: `sample_rate`, `language`,
`endpointing_ms`, …); `sentiment` is on by default here (`sentiment=false` turns it off, and
`sentiment` is then null). Audio is 16-bit little-endian PCM, 16 kHz mono unless `sample_rate`
says otherwise.

Client → server (JSON with a `type`; binary frames are taken as audio too):

* `{"type": "audio_chunk", "audio_data": <base64 PCM>, "timestamp": <any>}`;
* `{"type": "ping"}` → `{"type": "pong"}`;
* extensions: `{"type": "stop"}` or `{"type": "end_call"}` finish pending finals, then close
  1000 (the README's client just closes the socket).

Server → client, as the README shows them:

* `{"type": "transcription", "text", "sentiment": {"type", "confidence", "polarity",
  "subjectivity"}, "timestamp"}`, one per piece of speech; `sentiment.type` is `positive`,
  `negative` or `neutral` (see `actors.model.sentiment`); `timestamp` is the server's Unix time of
  sending in integer milliseconds;
* `{"type": "pong"}`.

The README's buffering (at least 2 s of audio before a transcription): a piece of speech is
sent once 2 s of audio have passed since it began (its own end, the end of its pause or the
next speech tells); a shorter piece is joined with the next one (one text, one sentiment of
the whole), and whatever is held goes out before the stream ends. Pieces with no words are not
sent.

Asked for with `?interim=true`: partials, as `transcription` messages with `"is_final": false`
(finals then carry `"is_final": true`, and are sent as they come, not joined). With
`?details=true`: `connected` {`client_id`, `session_id`, `sample_rate`, `timestamp`} first;
transcriptions add `client_id`, `is_final`, `start`, `end`, `utterance`, `confidence`,
`language` (a joined piece: its first utterance, its whole span, the lowest confidence);
`pong` adds `timestamp`; `stopped` {`client_id`, `session_id`, `transcript`,
`duration`} before the close; errors as `error` {`code`, `message`, `fatal`}. Without it,
invalid messages are ignored, as the README says (not logged, unlike the seed's warnings; a
fatal one still closes the socket with its code as the reason).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import msgspec

from protocol.codec import Inbound
from protocol.dialects.common import (
    ClientMessage,
    ClientMessages,
    PingMessage,
    StopMessage,
    b64_audio,
    decode_commands,
    encoder,
)
from protocol.native import (
    Error,
    Final,
    Partial,
    Pong,
    Ready,
    Sentiment,
    ServerFrame,
    SpeechStarted,
    Stop,
    Stopped,
    UtteranceEnd,
)

MIN_PIECE_S = 2.0  # the README's buffer: a transcription covers at least this much audio
Analyzer = Callable[[str], Sentiment]
MillisClock = Callable[[], int]


def now_ms() -> int:
    """Unix time in integer milliseconds, as the README's `timestamp` (`1234567890000`)."""
    return time.time_ns() // 1_000_000


class AudioChunk(ClientMessage, tag="audio_chunk"):
    audio_data: str
    timestamp: Any = None

    def inbound(self) -> bytes:
        return b64_audio(self.audio_data, "audio_data")


class EndCall(ClientMessage, tag="end_call"):
    def inbound(self) -> Stop:
        return Stop()


_Incoming = AudioChunk | PingMessage | StopMessage | EndCall
_messages: ClientMessages[_Incoming] = ClientMessages(msgspec.json.Decoder(_Incoming))


class Out(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    pass


class Connected(Out, tag="connected"):
    client_id: str
    session_id: str
    sample_rate: int
    timestamp: int


class Transcription(Out, tag="transcription"):
    text: str
    sentiment: Sentiment | None  # always present; null only with `sentiment=false`
    timestamp: int
    # what the README does not show: sent with `details=true` (`is_final` also with interim)
    client_id: str | None = None
    is_final: bool | None = None
    start: float | None = None
    end: float | None = None
    utterance: int | None = None
    confidence: float | None = None
    language: str | None = None


class PongOut(Out, tag="pong"):
    timestamp: int | None = None


class StoppedOut(Out, tag="stopped"):
    client_id: str
    session_id: str
    transcript: str
    duration: float


class ErrorOut(Out, tag="error"):
    code: str
    message: str
    fatal: bool


@attrs.frozen
class Piece:
    """Finals held until they cover `MIN_PIECE_S` of audio."""

    finals: tuple[Final, ...]

    @property
    def start(self) -> float:
        return self.finals[0].start

    @property
    def end(self) -> float:
        return self.finals[-1].end

    @property
    def text(self) -> str:
        return " ".join(final.text for final in self.finals if final.text)


class CallCodec:
    name = "seed_call"

    def __init__(
        self,
        client_id: str,
        *,
        analyze: Analyzer | None = None,
        interim: bool = False,
        details: bool = False,
        clock: MillisClock = now_ms,
    ) -> None:
        self.client_id = client_id
        self.analyze = analyze  # None: sentiment is off
        self.interim = interim
        self.details = details
        self.clock = clock
        self._held: Piece | None = None

    def decode(self, message: str | bytes) -> list[Inbound]:
        return decode_commands(_messages, message)

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        out: list[Out] = []
        match frame:
            case Ready() if self.details:
                out.append(
                    Connected(
                        client_id=self.client_id,
                        session_id=frame.session_id,
                        sample_rate=frame.sample_rate,
                        timestamp=self.clock(),
                    )
                )
            case Partial() if self.interim and frame.text:
                out.append(self._transcription(frame.text, frame, is_final=False))
            case Final():
                out.extend(self._final(frame))
            case SpeechStarted() | UtteranceEnd():
                if self._held is not None and frame.at - self._held.start >= MIN_PIECE_S:
                    out.extend(self._release())
            case Pong():
                out.append(PongOut(timestamp=self.clock() if self.details else None))
            case Stopped():
                out.extend(self._release())
                if self.details:
                    out.append(
                        StoppedOut(
                            client_id=self.client_id,
                            session_id=frame.session_id,
                            transcript=frame.transcript,
                            duration=frame.duration_s,
                        )
                    )
            case Error():
                if frame.fatal:
                    out.extend(self._release())
                if self.details:
                    out.append(ErrorOut(code=frame.code, message=frame.message, fatal=frame.fatal))
        return [encoder.encode(message).decode() for message in out]

    def _final(self, frame: Final) -> list[Out]:
        held = (self._held.finals if self._held is not None else ()) + (frame,)
        self._held = Piece(held)
        if self.interim or self._held.end - self._held.start >= MIN_PIECE_S:
            return self._release()
        return []

    def _release(self) -> list[Out]:
        piece, self._held = self._held, None
        if piece is None or not piece.text:
            return []
        last = piece.finals[-1]
        joined = msgspec.structs.replace(
            last,
            text=piece.text,
            start=piece.start,
            utterance=piece.finals[0].utterance,
            confidence=min(final.confidence for final in piece.finals),
        )
        return [self._transcription(piece.text, joined, is_final=True)]

    def _transcription(self, text: str, frame: Partial | Final, *, is_final: bool) -> Out:
        sentiment = self.analyze(text) if self.analyze is not None else None
        message = Transcription(text=text, sentiment=sentiment, timestamp=self.clock())
        if self.interim:
            message.is_final = is_final
        if self.details:
            message.client_id = self.client_id
            message.is_final = is_final
            message.start, message.end = frame.start, frame.end
            message.utterance = frame.utterance
            if isinstance(frame, Final):
                message.confidence, message.language = frame.confidence, frame.language
        return message
