"""The "Speech-to-Text Backend API" seed, `WS /ws/v1/speech-to-text`, as a codec (sans-IO).

Client → server (text frames are JSON with an `event`):

* `{"event": "start", ...}` opens the stream. Optional fields, at the top level or inside
  `"config": {...}`: `language` (code or `auto`), `sample_rate` (8000–48000, default 16000),
  `encoding` (`pcm_s16le` / `linear16` / `pcm16`, or `pcm_f32le`), `interim_results` (default
  true), `endpointing_ms`, `max_utterance_s`, `words`, `prompt`. Other fields are ignored.
* binary frames: PCM in the started encoding (16-bit little-endian, 16 kHz mono by default);
  audio before `start` is answered with an `audio_before_start` error and dropped.
* `{"event": "stop"}` finishes: every pending final, then `stopped`, then close 1000.
* `{"event": "finalize"}` ends the open utterance now; `{"event": "keepalive"}` keeps an idle
  stream open; `{"event": "ping"}` is answered with `pong`.

Server → client (JSON with a `type`):

* `started` {`session_id`, `sample_rate`, `language`, `model`}: the answer to `start`;
* `transcript` {`text`, `is_final`, `start`, `end`, `utterance`}; finals add `confidence`,
  `language` and, when `words` was asked for, `words` [{`word`, `start`, `end`,
  `confidence`}];
* `utterance_end` {`utterance`, `at`}; `pong` {};
* `stopped` {`session_id`, `full_transcription`, `duration`}: the answer to `stop`;
* `error` {`code`, `message`, `fatal`}.

Times are seconds of audio since the stream started. A second `start` is an `already_started`
error; a `start` whose options the model cannot serve (e.g. French on an English-only model)
is an error and the stream stays unstarted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from protocol.codec import Inbound, ProtocolError
from protocol.dialects.common import binary_audio, decode_json, encoder
from protocol.native import (
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
             "pcm_f32le": "pcm_f32le"}  # fmt: skip


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
    pass


class FinalizeEvent(Event, tag="finalize"):
    pass


class KeepAliveEvent(Event, tag="keepalive"):
    pass


class PingEvent(Event, tag="ping"):
    pass


_decoder = msgspec.json.Decoder(Start | StopEvent | FinalizeEvent | KeepAliveEvent | PingEvent)


class Out(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    pass


class Started(Out, tag="started"):
    session_id: str
    sample_rate: int
    language: str
    model: str


class Transcript(Out, tag="transcript"):
    text: str
    is_final: bool
    start: float
    end: float
    utterance: int
    confidence: float | None = None
    language: str | None = None
    words: list[Word] | None = None


class UtteranceEndOut(Out, tag="utterance_end"):
    utterance: int
    at: float


class StoppedOut(Out, tag="stopped"):
    session_id: str
    full_transcription: str
    duration: float


class ErrorOut(Out, tag="error"):
    code: str
    message: str
    fatal: bool


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

    def __init__(self, base: Config, check: Callable[[Config], str | None]) -> None:
        self.base = base
        self.check = check
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
        event = decode_json(_decoder, message, "event")
        match event:
            case Start():
                if self.started:
                    raise ProtocolError("already_started", "the stream has already started")
                config = start_config(self.base, event)
                problem = self.check(config)
                if problem is not None:
                    raise ProtocolError("invalid_config", problem)
                self.started = True
                return [config]
            case StopEvent():
                return [Stop()]
            case FinalizeEvent():
                return [Finalize()]
            case KeepAliveEvent():
                return [KeepAlive()]
            case PingEvent():
                return [Ping()]
        raise AssertionError(f"unhandled {event!r}")

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        out: Out | None = None
        match frame:
            case Ready():
                self._readies += 1
                if self._readies > 1:  # the first is the session's opening, before `start`
                    out = Started(
                        session_id=frame.session_id,
                        sample_rate=frame.sample_rate,
                        language=frame.language,
                        model=frame.model,
                    )
            case Partial():
                out = Transcript(
                    text=frame.text,
                    is_final=False,
                    start=frame.start,
                    end=frame.end,
                    utterance=frame.utterance,
                )
            case Final():
                out = Transcript(
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
                out = UtteranceEndOut(utterance=frame.utterance, at=frame.at)
            case Stopped():
                out = StoppedOut(
                    session_id=frame.session_id,
                    full_transcription=frame.transcript,
                    duration=frame.duration_s,
                )
            case Error():
                out = ErrorOut(code=frame.code, message=frame.message, fatal=frame.fatal)
            case Pong():
                out = PongOut()
        return [] if out is None else [encoder.encode(out).decode()]
