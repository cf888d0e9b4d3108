"""The "Speech-to-Text Backend API" seed, `WS /ws/v1/speech-to-text`, as a codec (sans-IO).

Its README is the contract: every message it shows is accepted, and answered in exactly its
shape (tag key `event`). What it does not show is sent only when the client asks for it with
`?details=true` in the query string.

Client → server (text frames are JSON with an `event`):

* `{"event": "start"}` opens the stream. Optional fields (extensions), at the top level or
  inside `"config": {...}`: `language` (code or `auto`), `sample_rate` (8000–48000, default
  16000), `encoding` (`pcm_s16le` / `linear16` / `pcm16`, `pcm_f32le`, or G.711 `mulaw` /
  `alaw`, 8000 Hz unless `sample_rate` says otherwise), `interim_results`
  (default true), `endpointing_ms`, `max_utterance_s`, `words`, `prompt`. Others are ignored.
* binary frames: PCM in the started encoding (16-bit little-endian, 16 kHz mono by default);
  audio before `start` is answered with an error and dropped.
* `{"event": "stop"}` finishes: every pending final, then `stopped`, then close 1000.
* extensions: `{"event": "finalize"}` ends the open utterance now; `{"event": "keepalive"}`
  keeps an idle stream open; `{"event": "ping"}` is answered with `{"event": "pong"}`.

Server → client, as the README shows them:

* `{"event": "transcript", "text", "is_final"}`: partials (`is_final` false) and finals;
* `{"event": "utterance_end", "text": ""}` after each utterance's final;
* `{"event": "stopped", "message": "STT session ended.", "session_id", "full_transcription"}`;
* `{"event": "error", "message"}`.

With `?details=true`: `started` {`session_id`, `sample_rate`, `language`, `model`} answers
`start`; transcripts add `start`, `end`, `utterance` (finals also `confidence`, `language`
and, when asked for, `words`); `utterance_end` adds `utterance` and `at`; `stopped` adds
`duration`; `error` adds `code` and `fatal`. Times are seconds of audio since the start.

Where the README is silent (written down in the README's "Coming from" section too): `start`
has no answer by default (the README shows none; the session id arrives in `stopped`);
`stopped` is followed by a close 1000, so a new session takes a new connection; a second
`start`, or a `start` whose options the model cannot serve (e.g. French on an English-only
model) is an `error` and the stream stays as it was. The route records each session (SQLite
row and WAV file) unless the server's recording policy says otherwise or `record=false`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from protocol.codec import Inbound, ProtocolError
from protocol.dialects.common import ClientMessages, binary_audio, encoder
from protocol.native import (
    COMPANDED,
    Config,
    Error,
    Final,
    Finalize,
    KeepAlive,
    Partial,
    Ping,
    Pong,
    Ready,
    ServerFrame,
    Stop,
    Stopped,
    UtteranceEnd,
    Word,
)

ENCODINGS = {"pcm_s16le": "pcm_s16le", "linear16": "pcm_s16le", "pcm16": "pcm_s16le",
             "pcm_f32le": "pcm_f32le", "mulaw": "mulaw", "alaw": "alaw"}  # fmt: skip


class StartConfig(msgspec.Struct, kw_only=True):
    language: str | None = None
    sample_rate: int | None = None
    encoding: str | None = None
    interim_results: bool | None = None
    endpointing_ms: int | None = None
    max_utterance_s: float | None = None
    words: bool | None = None
    prompt: str | None = None


class Event(msgspec.Struct, tag_field="event", kw_only=True):
    pass


class Start(Event, tag="start"):
    language: str | None = None
    sample_rate: int | None = None
    encoding: str | None = None
    interim_results: bool | None = None
    endpointing_ms: int | None = None
    max_utterance_s: float | None = None
    words: bool | None = None
    prompt: str | None = None
    config: StartConfig | None = None


class StopEvent(Event, tag="stop"):
    def inbound(self) -> Stop:
        return Stop()


class FinalizeEvent(Event, tag="finalize"):
    def inbound(self) -> Finalize:
        return Finalize()


class KeepAliveEvent(Event, tag="keepalive"):
    def inbound(self) -> KeepAlive:
        return KeepAlive()


class PingEvent(Event, tag="ping"):
    def inbound(self) -> Ping:
        return Ping()


_Incoming = Start | StopEvent | FinalizeEvent | KeepAliveEvent | PingEvent
_events: ClientMessages[_Incoming] = ClientMessages(msgspec.json.Decoder(_Incoming), tag="event")


class Out(msgspec.Struct, tag_field="event", kw_only=True, omit_defaults=True):
    pass


class Started(Out, tag="started"):
    session_id: str
    sample_rate: int
    language: str
    model: str


class Transcript(Out, tag="transcript"):
    text: str
    is_final: bool
    start: float | None = None
    end: float | None = None
    utterance: int | None = None
    confidence: float | None = None
    language: str | None = None
    words: list[Word] | None = None


class UtteranceEndOut(Out, tag="utterance_end"):
    text: str  # always "", as the README shows
    utterance: int | None = None
    at: float | None = None


STOPPED_MESSAGE = "STT session ended."


class StoppedOut(Out, tag="stopped"):
    message: str
    session_id: str
    full_transcription: str
    duration: float | None = None


class ErrorOut(Out, tag="error"):
    message: str
    code: str | None = None
    fatal: bool | None = None


class PongOut(Out, tag="pong"):
    pass


def start_config(base: Config, start: Start) -> Config:
    """`base` with the options a `start` event named; raises `ProtocolError` when invalid."""
    given: dict[str, Any] = {}
    for source in (start, start.config):
        if source is None:
            continue
        for name in StartConfig.__struct_fields__:
            if getattr(source, name) is not None:
                given[name] = getattr(source, name)
    if "encoding" in given:
        if given["encoding"] not in ENCODINGS:
            raise ProtocolError("invalid_config", f"encoding {given['encoding']!r} is not PCM")
        given["encoding"] = ENCODINGS[given["encoding"]]
        if given["encoding"] in COMPANDED:  # G.711 is telephone audio: 8 kHz unless told
            given.setdefault("sample_rate", 8000)
    if "interim_results" in given:
        given["interim"] = given.pop("interim_results")
    merged = msgspec.structs.asdict(base) | given
    try:
        return msgspec.convert(merged, Config)
    except msgspec.ValidationError as error:
        raise ProtocolError("invalid_config", f"start: {error}") from None


class SpeechToTextCodec:
    """One connection's codec; `check` says what the model cannot do with a config."""

    name = "seed_stt"

    def __init__(
        self, base: Config, check: Callable[[Config], str | None], *, details: bool = False
    ) -> None:
        self.base = base
        self.check = check
        self.details = details
        self.started = False
        self._readies = 0

    def decode(self, message: str | bytes) -> list[Inbound]:
        if isinstance(message, bytes):
            audio = binary_audio(message)
            if not self.started:
                raise ProtocolError(
                    "audio_before_start", 'send {"event": "start"} before any audio'
                )
            return [audio]
        event = _events.parse(message)
        if not isinstance(event, Start):
            return [event.inbound()]
        if self.started:
            raise ProtocolError("already_started", "the stream has already started")
        config = start_config(self.base, event)
        problem = self.check(config)
        if problem is not None:
            raise ProtocolError("invalid_config", problem)
        self.started = True
        return [config]

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        out = self._full(frame)
        if out is None:
            return []
        if not self.details:
            if isinstance(out, Started):
                return []  # the README shows no answer to `start`
            out = _readme_shape(out)
        return [encoder.encode(out).decode()]

    def _full(self, frame: ServerFrame) -> Out | None:
        """`frame` with every detail; `_readme_shape` strips what the README does not show."""
        match frame:
            case Ready():
                self._readies += 1
                if self._readies > 1:  # the first is the session's opening, before `start`
                    return Started(
                        session_id=frame.session_id,
                        sample_rate=frame.sample_rate,
                        language=frame.language,
                        model=frame.model,
                    )
            case Partial():
                return Transcript(
                    text=frame.text,
                    is_final=False,
                    start=frame.start,
                    end=frame.end,
                    utterance=frame.utterance,
                )
            case Final():
                return Transcript(
                    text=frame.text,
                    is_final=True,
                    start=frame.start,
                    end=frame.end,
                    utterance=frame.utterance,
                    confidence=frame.confidence,
                    language=frame.language,
                    words=frame.words,
                )
            case UtteranceEnd():
                return UtteranceEndOut(text="", utterance=frame.utterance, at=frame.at)
            case Stopped():
                return StoppedOut(
                    message=STOPPED_MESSAGE,
                    session_id=frame.session_id,
                    full_transcription=frame.transcript,
                    duration=frame.duration_s,
                )
            case Error():
                return ErrorOut(message=frame.message, code=frame.code, fatal=frame.fatal)
            case Pong():
                return PongOut()
        return None


def _readme_shape(out: Out) -> Out:
    """`out` with only the keys the README shows (optional details cleared, so omitted)."""
    match out:
        case Transcript():
            return Transcript(text=out.text, is_final=out.is_final)
        case UtteranceEndOut():
            return UtteranceEndOut(text="")
        case StoppedOut():
            return StoppedOut(
                message=out.message,
                session_id=out.session_id,
                full_transcription=out.full_transcription,
            )
        case ErrorOut():
            return ErrorOut(message=out.message)
    return out
