"""An OpenAI Realtime transcription session's settings, and the native `Config` they mean.

Sans-IO. `SessionState` is what `session.created` / `session.updated` show; `updated` applies
one `session.update` to it (a nested object the update names replaces the one before, as
OpenAI's does; what it leaves out stays) and refuses, with the `param` at fault, what Chorus
cannot serve. `native_config` maps the state onto the session pipeline's `Config`:

* `audio.input.format`: `audio/pcm` is 24 kHz 16-bit mono little-endian PCM, `audio/pcmu` and
  `audio/pcma` 8 kHz G.711 (the session decodes and resamples them).
* `audio.input.turn_detection`: `server_vad` cuts turns at pauses of `silence_duration_ms`
  (the segmenter's `endpointing_ms`); `semantic_vad`'s `eagerness` picks a pause length
  (`EAGERNESS_MS`); `null` (the client commits each turn) sets the longest pause and
  utterance the segmenter allows, so the turn is cut where the client commits.
  `idle_timeout_ms` is the codec's (`idle_timeout_s`); `threshold` and `prefix_padding_ms`
  are accepted and shown, not applied: the segmenter's VAD threshold and pre-roll are fixed
  (docs/protocols.md).
* `audio.input.transcription`: `language` (or a single `languages` entry) is the session's
  language; `prompt` and `keywords` are the session's vocabulary (the native `prompt` and
  `keyterms`; `vocabulary` says what a mid-stream update sends as a native `configure`);
  `model` is shown as given (the server's own model transcribes).
* `noise_reduction` and `include` are accepted and shown, not applied.
"""

from __future__ import annotations

import re

import attrs
import msgspec
from msgspec import UNSET

from protocol.codec import ProtocolError
from protocol.dialects.openai_realtime_messages import (
    AudioConfig,
    AudioInput,
    Format,
    SemanticVad,
    ServerVad,
    SessionOut,
    SessionRequest,
    Transcription,
)
from protocol.native import MAX_KEYTERMS, MAX_PROMPT_CHARS, Config, Configure, Encoding

FORMATS: dict[str, tuple[Encoding, int]] = {
    "audio/pcm": ("pcm_s16le", 24000),
    "audio/pcmu": ("mulaw", 8000),
    "audio/pcma": ("alaw", 8000),
}
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "mulaw": 1, "alaw": 1}
EAGERNESS_MS = {"high": 300, "medium": 700, "auto": 700, "low": 1500}
DEFAULT_SILENCE_MS = 500
MIN_SILENCE_MS = 200  # shorter pauses cut words apart
MANUAL_ENDPOINTING_MS = 10_000  # turn_detection null: the longest pause the segmenter allows
MANUAL_MAX_UTTERANCE_S = 30.0
MAX_KEYWORDS = MAX_KEYTERMS
IDLE_TIMEOUT_MS = (1000, 60_000)  # the `idle_timeout_ms` served: shorter would fire on pauses
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z]{2,4})?")


@attrs.frozen
class SessionState:
    """A transcription session's settings, every field set (None: off)."""

    input: AudioInput
    include: list[str] | None = None

    @classmethod
    def default(cls, model: str) -> SessionState:
        return cls(
            AudioInput(
                format=Format(type="audio/pcm", rate=24000),
                noise_reduction=None,
                transcription=Transcription(model=model),
                turn_detection=ServerVad(
                    threshold=0.5, prefix_padding_ms=300, silence_duration_ms=DEFAULT_SILENCE_MS
                ),
            )
        )

    @property
    def format(self) -> str:
        assert isinstance(self.input.format, Format)
        return self.input.format.type or "audio/pcm"

    @property
    def manual(self) -> bool:
        """The client commits each turn (`turn_detection: null`)."""
        return self.input.turn_detection is None

    @property
    def bytes_per_second(self) -> int:
        encoding, rate = FORMATS[self.format]
        return BYTES_PER_SAMPLE[encoding] * rate

    @property
    def idle_timeout_s(self) -> float | None:
        """Server VAD's `idle_timeout_ms`, in seconds (None: off)."""
        detection = self.input.turn_detection
        if isinstance(detection, ServerVad) and detection.idle_timeout_ms:
            return detection.idle_timeout_ms / 1000
        return None

    def vocabulary(self) -> tuple[list[str], str]:
        """The key terms and prompt this state sets (`[]`, `""`: none)."""
        transcription = self.input.transcription
        if not isinstance(transcription, Transcription):
            return [], ""
        return list(transcription.keywords or []), transcription.prompt or ""

    def configure(self) -> Configure:
        """The native `configure` that sets this state's vocabulary mid-stream."""
        keyterms, prompt = self.vocabulary()
        return Configure(keyterms=keyterms, prompt=prompt)

    def shown(self) -> SessionOut:
        return SessionOut(audio=AudioConfig(input=self.input), include=self.include)


class Refused(ProtocolError):
    """A client event Chorus refuses, with the field at fault (OpenAI's error `param`)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(code, message)
        self.param = param


def refusal(param: str, message: str) -> Refused:
    return Refused("invalid_value", f"{param}: {message}", param)


def updated(state: SessionState, request: SessionRequest) -> SessionState:
    """`state` with one `session.update` applied; raises `ProtocolError` for what is wrong."""
    if request.type != "transcription":
        raise refusal(
            "session.type",
            f'this endpoint serves transcription sessions: "transcription", not {request.type!r}',
        )
    given = request.audio.input if request.audio is not None else None
    current = state.input
    if given is not None:
        changes = {
            name: getattr(given, name)
            for name in AudioInput.__struct_fields__
            if getattr(given, name) is not UNSET
        }
        current = msgspec.structs.replace(current, **changes)
    if isinstance(current.format, Format):
        current = msgspec.structs.replace(current, format=_format(current.format))
    if isinstance(current.transcription, Transcription):
        _check_transcription(current.transcription)
    if isinstance(current.turn_detection, ServerVad):
        _check_idle_timeout(current.turn_detection.idle_timeout_ms)
    include = state.include if request.include is UNSET else request.include
    return SessionState(current, list(include) if include is not None else None)


def _format(given: Format) -> Format:
    kind = given.type or "audio/pcm"
    if kind not in FORMATS:
        raise refusal(
            "session.audio.input.format.type",
            f"{kind!r} is not one of audio/pcm, audio/pcmu, audio/pcma",
        )
    rate = FORMATS[kind][1]
    if given.rate not in (None, rate):
        raise refusal("session.audio.input.format.rate", f"{kind} is {rate} Hz, not {given.rate}")
    return Format(type=kind, rate=rate if kind == "audio/pcm" else None)


def _check_transcription(given: Transcription) -> None:
    param = "session.audio.input.transcription"
    for language in [given.language or "en", *(given.languages or [])]:
        if not _LANGUAGE.fullmatch(language):
            raise refusal(f"{param}.language", f"{language!r} is not an ISO-639-1 code")
    keywords = given.keywords or []
    if len(keywords) > MAX_KEYWORDS:  # the session checks each term (`invalid_vocabulary`)
        raise refusal(f"{param}.keywords", f"at most {MAX_KEYWORDS} keywords")
    if len(given.prompt or "") > MAX_PROMPT_CHARS:
        raise refusal(f"{param}.prompt", f"at most {MAX_PROMPT_CHARS} characters")


def _check_idle_timeout(idle_timeout_ms: int | None) -> None:
    low, high = IDLE_TIMEOUT_MS
    if idle_timeout_ms is not None and not low <= idle_timeout_ms <= high:
        raise refusal(
            "session.audio.input.turn_detection.idle_timeout_ms",
            f"{idle_timeout_ms} is not between {low} and {high}",
        )


def native_config(state: SessionState) -> Config:
    """The session pipeline's config for `state` (see the module docstring)."""
    encoding, rate = FORMATS[state.format]
    detection = state.input.turn_detection
    endpointing, longest = DEFAULT_SILENCE_MS, 15.0
    match detection:
        case None:
            endpointing, longest = MANUAL_ENDPOINTING_MS, MANUAL_MAX_UTTERANCE_S
        case ServerVad(silence_duration_ms=silence) if silence is not None:
            endpointing = min(max(silence, MIN_SILENCE_MS), MANUAL_ENDPOINTING_MS)
        case SemanticVad(eagerness=eagerness):
            endpointing = EAGERNESS_MS[eagerness or "auto"]
    transcription = state.input.transcription
    language = "auto"
    if isinstance(transcription, Transcription):
        languages = transcription.languages or []
        language = transcription.language or (languages[0] if len(languages) == 1 else "auto")
    keyterms, prompt = state.vocabulary()
    return Config(
        sample_rate=rate,
        encoding=encoding,
        language=language,
        interim=True,  # deltas while the user speaks, in both turn modes
        endpointing_ms=endpointing,
        max_utterance_s=longest,
        prompt=prompt or None,
        keyterms=keyterms or None,
    )
