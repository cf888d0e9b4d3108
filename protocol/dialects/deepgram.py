"""Deepgram live streaming (`WS /v1/listen`) as a codec over the native session.

Sans-IO. `parse_query` turns Deepgram's query parameters into a native `Config` plus the few
options that change only the wire shapes (`DeepgramOptions`); `DeepgramCodec` (one per
connection) translates messages both ways. The route refuses bad parameters before the upgrade
with HTTP 400 and Deepgram's body `{"err_code", "err_msg", "request_id"}`.

Query parameters: `encoding` (`linear16`, `mulaw` and `alaw` are the session's raw encodings;
`opus`, `ogg-opus`, `webm`, `flac` or none at all: the container is detected from the bytes, as
Deepgram does without `encoding`), `sample_rate` (default 16000, 8000 for mulaw/alaw),
`channels` (raw PCM's, averaged to mono by the session's decoder; with `multichannel=true`
each is its own stream, `service/session/multichannel.py`, and `Finalize` may name a
`channel`), `language` (`multi` means detect), `interim_results` (default false), `endpointing`
(ms of silence that ends an utterance, at least `MIN_ENDPOINTING_MS`, default 500, `false` to
cut only at `utterance_end_ms` or the maximum length), `utterance_end_ms`, `vad_events`,
`punctuate` / `smart_format` (without either the transcript is lower case without
punctuation, as Deepgram's), `keyterm` and `keywords` (repeated: the session's vocabulary,
`protocol/dialects/configure.py`); `model` and every other Deepgram option are accepted and
ignored. Words are always returned, so sessions run with `words=True`.

Client messages: binary audio; `{"type": "KeepAlive"}`, `{"type": "Finalize"}` (flush and
keep going), `{"type": "CloseStream"}` (drain, `Metadata`, close 1000); an empty binary frame
also closes the stream (Deepgram's older way); `{"type": "Configure", "keyterms": [...]}`
replaces the key terms from the next draft and utterance on, answered by exactly one
`ConfigureSuccess` {`request_id`, `keyterms` (when replaced)} or `ConfigureFailure`
{`request_id`, `code`, `description`}. Server messages:

* `Results`: `type`, `channel_index` [0, 1] ([c, n] with `multichannel`), `duration`,
  `start`, `is_final`, `speech_final`, `from_finalize`, `channel.alternatives[0]`
  {`transcript`, `confidence`, `words` [{`word`, `start`, `end`, `confidence`,
  `punctuated_word`}]}, `metadata` {`request_id`, `model_info` {`name`, `version`, `arch`},
  `model_uuid`}. Interim results carry the draft's confidence and its own timed words.
  `speech_final` is true when a pause (or the end of the stream) ended the utterance, false
  after `Finalize` or a cut at the maximum length.
* `SpeechStarted` {`channel` [0], `timestamp`} only with `vad_events=true` (it also marks the
  continuation after a maximum-length cut); `UtteranceEnd` {`channel` [0, 1],
  `last_word_end`} after each pause-ended utterance, only when `utterance_end_ms` is set.
* `Metadata` {`transaction_key`, `request_id`, `sha256` (of the audio bytes received),
  `created`, `duration`, `channels`, `models`, `model_info`} when the stream ends.
* `Error` {`variant`, `description`, `code`} for a message the server cannot accept.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping

import attrs
import msgspec

from protocol.codec import Inbound
from protocol.dialects.common import merge_punctuation
from protocol.dialects.configure import CONFIGURE_FAILURES, configure_failure_on
from protocol.dialects.deepgram_messages import (
    Alternative,
    Channel,
    ConfigureFailure,
    ConfigureMessage,
    ConfigureSuccess,
    ErrorMessage,
    Message,
    Metadata,
    ModelInfo,
    Results,
    ResultsMetadata,
    SpeechStartedMessage,
    UtteranceEndMessage,
    Word,
    client_messages,
)
from protocol.native import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    Config,
    Configured,
    Encoding,
    Error,
    Final,
    Partial,
    Ready,
    ServerFrame,
    SpeechStarted,
    Stop,
    Stopped,
    UtteranceEnd,
)
from protocol.native import (
    Word as NativeWord,
)

MIN_ENDPOINTING_MS = 300
NO_ENDPOINTING_MS = 10_000
CONTAINER_ENCODINGS = frozenset({"opus", "ogg-opus", "webm", "flac", "auto"})
COMPANDED = ("mulaw", "alaw")
RAW_ENCODINGS: dict[str, Encoding] = {"linear16": "pcm_s16le", "mulaw": "mulaw", "alaw": "alaw"}


class QueryError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@attrs.frozen
class DeepgramOptions:
    encoding: str | None = None  # as the client named it
    channels: int = 1  # for `Metadata`; the session's config has them too
    utterance_end: bool = False
    vad_events: bool = False
    punctuate: bool = False
    multi: bool = False
    multichannel: bool = False  # each channel its own stream: `channel_index` [c, channels]


def _flag(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise QueryError(name, f"{name} must be true or false, not {value!r}")


def _whole(params: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not re.fullmatch(r"\d{1,6}", value) or not low <= int(value) <= high:
        raise QueryError(name, f"{name} must be a whole number in [{low}, {high}], not {value!r}")
    return int(value)


def parse_query(
    params: Mapping[str, str], keyterms: list[str] | None = None
) -> tuple[Config, DeepgramOptions]:
    """Deepgram query parameters → (native config, wire options); raises `QueryError`.
    `keyterms`: the repeated `keyterm`/`keywords` parameters' (`query_keyterms`)."""
    encoding = params.get("encoding") or None
    if encoding is not None and encoding not in CONTAINER_ENCODINGS | RAW_ENCODINGS.keys():
        raise QueryError("encoding", f"encoding {encoding!r} is not supported")
    raw = encoding in RAW_ENCODINGS
    default_rate = 8000 if encoding in COMPANDED else 16000
    rate = _whole(params, "sample_rate", MIN_SAMPLE_RATE, MAX_SAMPLE_RATE) or default_rate
    channels = _whole(params, "channels", 1, MAX_CHANNELS) or 1
    language = (params.get("language") or "en").strip()
    multi = language in ("multi", "auto")
    if not multi and not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]{2,4})?", language):
        raise QueryError("language", f"language {language!r} is not a language code")
    utterance_end_ms = _whole(params, "utterance_end_ms", 1, 60_000)
    endpointing_text = (params.get("endpointing") or "").lower()
    if endpointing_text == "false":
        endpointing = min(utterance_end_ms or NO_ENDPOINTING_MS, NO_ENDPOINTING_MS)
    elif endpointing_text in ("", "true"):
        endpointing = 500
    else:
        given = _whole(params, "endpointing", 0, 60_000) or 0
        endpointing = min(max(given, MIN_ENDPOINTING_MS), NO_ENDPOINTING_MS)
    multichannel = _flag(params, "multichannel") and raw and channels > 1
    config = Config(
        sample_rate=max(rate, MIN_SAMPLE_RATE),
        encoding=RAW_ENCODINGS.get(encoding or "", "auto"),
        channels=channels if raw else 1,
        multichannel=multichannel,
        language="auto" if multi else language,
        interim=_flag(params, "interim_results"),
        endpointing_ms=max(endpointing, MIN_ENDPOINTING_MS),
        words=True,
        keyterms=keyterms,
    )
    options = DeepgramOptions(
        encoding=encoding,
        channels=channels if raw else 1,
        utterance_end=utterance_end_ms is not None,
        vad_events=_flag(params, "vad_events"),
        punctuate=_flag(params, "punctuate") or _flag(params, "smart_format"),
        multi=multi,
        multichannel=multichannel,
    )
    return config, options


def handshake_error(message: str, request_id: str) -> bytes:
    """The body Deepgram answers a refused handshake with (HTTP 400)."""
    body = {"err_code": "Bad Request", "err_msg": message, "request_id": request_id}
    return json.dumps(body).encode()


_encoder = msgspec.json.Encoder()
_PUNCTUATION = re.compile(r"[^\w'\s-]+")


# -- the codec ---------------------------------------------------------------------------------


class DeepgramCodec:
    """One connection's translation between Deepgram messages and native frames."""

    name = "deepgram"

    def __init__(self, options: DeepgramOptions, *, created: str, model: str) -> None:
        self.options = options
        self.created = created
        self.request_id = ""  # the session's id, from its `Ready` (always the first frame)
        self._model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"chorus:{model}"))
        self._model_info = ModelInfo(name=model, version="chorus", arch="whisper")
        self._metadata = ResultsMetadata(
            request_id="", model_info=self._model_info, model_uuid=self._model_uuid
        )
        self._sha256 = hashlib.sha256()
        self._tracks: dict[int, _Track] = {}  # each channel's, by its index
        self._channels = options.channels if options.multichannel else 1
        self._replacing: list[bool] = []  # per `Configure` unanswered: does it set keyterms?

    # client → native

    def decode(self, message: str | bytes) -> list[Inbound]:
        if isinstance(message, bytes):
            if not message:
                return [Stop()]  # Deepgram's older way to close the stream
            self._sha256.update(message)
            return [message]
        parsed = configure_failure_on(client_messages.parse, message)
        if isinstance(parsed, ConfigureMessage):
            self._replacing.append(parsed.keyterms is not None)
        return [parsed.inbound()]

    # native → client

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        message: Message | None = None
        match frame:
            case Ready(session_id=session_id):
                self.request_id = _as_uuid(session_id)
                self._metadata = msgspec.structs.replace(self._metadata, request_id=self.request_id)
            case SpeechStarted(at=at):
                track = self._track(frame.channel)
                track.continued_at = {t for t in track.continued_at if t >= track.last_final_end}
                track.continued_at.add(at)
                if self.options.vad_events:
                    message = SpeechStartedMessage(channel=[track.index], timestamp=at)
            case Partial():
                message = self._interim(frame)
            case Final():
                message = self._final(frame)
            case UtteranceEnd(at=at):
                track = self._track(frame.channel)
                if self.options.utterance_end and at not in track.continued_at:
                    last = track.last_word_end or at
                    message = UtteranceEndMessage(
                        channel=[track.index, self._channels], last_word_end=last
                    )
            case Stopped():
                message = Metadata(
                    transaction_key="deprecated",
                    request_id=self.request_id,
                    sha256=self._sha256.hexdigest(),
                    created=self.created,
                    duration=frame.duration_s,
                    channels=self.options.channels,
                    models=[self._model_uuid],
                    model_info={self._model_uuid: self._model_info},
                )
            case Configured():
                replaced = self._replacing.pop(0) if self._replacing else True
                keyterms = frame.keyterms if replaced else None
                message = ConfigureSuccess(request_id=self.request_id, keyterms=keyterms)
            case Error() if frame.code in CONFIGURE_FAILURES:
                if frame.code != "invalid_configure" and self._replacing:
                    self._replacing.pop(0)  # the session refused it (a malformed one never came)
                message = ConfigureFailure(
                    request_id=self.request_id,
                    code=CONFIGURE_FAILURES[frame.code],
                    description=frame.message,
                )
            case Error():
                variant = "SchemaError" if frame.code in _SCHEMA_ERRORS else "Error"
                message = ErrorMessage(variant=variant, description=frame.message, code=frame.code)
        return [] if message is None else [_encoder.encode(message).decode()]

    def _final(self, frame: Final) -> Results:
        language = frame.language if self.options.multi else None
        words = _words(frame.words, language)
        track = self._track(frame.channel)
        if words:
            track.last_word_end = words[-1].end
        track.last_final_end = frame.end
        speech_final = not frame.from_finalize and frame.end not in track.continued_at
        return self._results(
            track,
            frame.text,
            frame.start,
            frame.end,
            words,
            frame.confidence,
            final=(speech_final, frame.from_finalize),
            language=language,
        )

    def _interim(self, frame: Partial) -> Results:
        """Interim results carry the draft's own timed words (a Deepgram session drafts with
        `words: true`), at the draft's confidence overall."""
        words = _words(frame.words, None)
        track = self._track(frame.channel)
        return self._results(
            track, frame.text, frame.start, frame.end, words, frame.confidence, final=None
        )

    def _track(self, channel: int | msgspec.UnsetType) -> _Track:
        index = 0 if isinstance(channel, msgspec.UnsetType) else channel
        return self._tracks.setdefault(index, _Track(index))

    def _results(
        self,
        track: _Track,
        text: str,
        start: float,
        end: float,
        words: list[Word],
        confidence: float,
        *,
        final: tuple[bool, bool] | None,
        language: str | None = None,
    ) -> Results:
        transcript = text.strip() if self.options.punctuate else _plain(text)
        alternative = Alternative(
            transcript=transcript,
            confidence=confidence,
            words=words,
            languages=[language] if language else None,
        )
        return Results(
            channel_index=[track.index, self._channels],
            duration=round(max(0.0, end - start), 3),
            start=start,
            is_final=final is not None,
            speech_final=final is not None and final[0],
            channel=Channel(alternatives=[alternative]),
            metadata=self._metadata,
            from_finalize=final is not None and final[1],
        )


@attrs.define
class _Track:
    """What the codec remembers of one channel's stream (a single-channel session has one)."""

    index: int
    continued_at: set[float] = attrs.field(factory=set)  # SpeechStarted times continuing a cut
    last_final_end: float = 0.0
    last_word_end: float = 0.0


def _words(words: list[NativeWord] | None, language: str | None) -> list[Word]:
    """Native timed words as Deepgram's, punctuation merged into its neighbours."""
    timed = [(w.word, w.start, w.end, w.confidence) for w in words or []]
    return [
        Word(
            word=_plain(text),
            start=start,
            end=end,
            confidence=confidence,
            punctuated_word=text,
            language=language,
        )
        for text, start, end, confidence in merge_punctuation(timed)
    ]


_SCHEMA_ERRORS = frozenset({"invalid_json", "unknown_type", "invalid_message"})


def _plain(text: str) -> str:
    """Deepgram's unpunctuated form: lower case, punctuation dropped, spaces collapsed."""
    return " ".join(_PUNCTUATION.sub("", text).lower().split())


def _as_uuid(session_id: str) -> str:
    """Deepgram's request ids are dashed UUIDs; Chorus's session ids are UUID hex."""
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        return session_id
