"""OpenAI audio API shapes (`/v1/audio/transcriptions`, `/v1/audio/translations`,
`/v1/models`) and the text, SRT and WebVTT formatters. Sans-IO: Structs and pure functions.

The HTTP layer (`service/routes/uploads.py`) turns a transcribed file into `Segment`s and `Word`s
(times in seconds from the start of the file) and picks a formatter by `response_format`:

* `json` → `{"text"}`; `text` → the text and a newline; `verbose_json` → `{"task", "language"
  (the language's English name, as OpenAI writes it), "duration", "text", "segments", "words"?}`
  with Whisper's per-segment fields (`tokens` is always empty: the model runs without
  returning token ids, and `temperature` is always 0.0: decoding is beam search, no fallback);
* `srt` and `vtt` → one cue per segment.

`split_segment` cuts a long segment (files are cut at pauses, up to 25 s) into subtitle-sized
cues at sentence ends, pauses (`CUE_PAUSE_S`), commas once a cue is half full, or
`MAX_CUE_S` / `MAX_CUE_CHARS`, using the word timings; times stay inside the parent segment
and never go backwards.

Errors use OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Streaming (`stream=true`): server-sent events, one `data:` line of JSON each, as the `openai`
client parses them: `TextDelta`s, then one `TextDone` (the text, the detected languages and the
usage in tokens); an error after the stream started is `event: error` with `StreamError`
(`{"type": "error", "error": {...}}`), which the client raises as an `APIError`.

Model aliases: `parse_model_aliases` reads `CHORUS_MODEL_ALIASES` (`name=` for the served
model, `name=served-model-name`, comma-separated; `none` for no aliases).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import msgspec

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("json", "text", "srt", "vtt", "verbose_json")
UNSPACED = frozenset({"zh", "ja", "yue", "th", "lo", "my", "km", "bo"})
"""Languages written without spaces: their segments join with nothing between them."""
MAX_CUE_S = 7.0
MAX_CUE_CHARS = 84
CUE_PAUSE_S = 0.6
MEDIA_TYPES: dict[ResponseFormat, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


class Word(msgspec.Struct, kw_only=True):
    word: str
    start: float
    end: float


class Segment(msgspec.Struct, kw_only=True):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int] = msgspec.field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


class Transcription(msgspec.Struct, kw_only=True):
    text: str


class VerboseTranscription(msgspec.Struct, kw_only=True, omit_defaults=True):
    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[Segment]
    words: list[Word] | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct, kw_only=True):
    error: ErrorBody


class Model(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "chorus"


class ModelList(msgspec.Struct, kw_only=True):
    data: list[Model]
    object: Literal["list"] = "list"


class InputTokenDetails(msgspec.Struct, kw_only=True):
    audio_tokens: int
    text_tokens: int


class Usage(msgspec.Struct, kw_only=True):
    """Tokens, as OpenAI bills its token-priced models (the only usage its done event has)."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_token_details: InputTokenDetails
    type: Literal["tokens"] = "tokens"

    @classmethod
    def of(cls, *, audio: int, text: int, output: int) -> Usage:
        details = InputTokenDetails(audio_tokens=audio, text_tokens=text)
        return cls(
            input_tokens=audio + text,
            output_tokens=output,
            total_tokens=audio + text + output,
            input_token_details=details,
        )


class Language(msgspec.Struct, kw_only=True):
    code: str


class TextDelta(msgspec.Struct, kw_only=True, tag_field="type", tag="transcript.text.delta"):
    delta: str


class TextDone(msgspec.Struct, kw_only=True, tag_field="type", tag="transcript.text.done"):
    text: str
    languages: list[Language]
    usage: Usage


class StreamError(msgspec.Struct, kw_only=True, tag_field="type", tag="error"):
    error: ErrorBody


StreamEvent = TextDelta | TextDone | StreamError

encoder = msgspec.json.Encoder()


def sse(event: StreamEvent) -> bytes:
    """One server-sent event (msgspec writes JSON on one line, as a `data:` field needs)."""
    named = b"event: error\n" if isinstance(event, StreamError) else b""
    return named + b"data: " + encoder.encode(event) + b"\n\n"


DEFAULT_MODEL_ALIASES = (
    "whisper-1=,gpt-transcribe=,gpt-live-transcribe=,gpt-4o-transcribe=,"
    "gpt-4o-mini-transcribe=,gpt-realtime-whisper="
)
MAX_ALIASES = 64
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")

ModelAliases = tuple[tuple[str, str], ...]
"""(alias, target) pairs in the configured order; an empty target is the served model."""


def parse_model_aliases(value: str | ModelAliases) -> ModelAliases:
    """`CHORUS_MODEL_ALIASES` (see the module docstring), or pairs already parsed; a malformed
    list raises `ValueError` saying what is wrong, so the server refuses to start with it."""
    if not isinstance(value, str):
        return tuple(value)
    if value.strip().lower() == "none":
        return ()
    pairs: dict[str, str] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        name, equals, target = (piece.strip() for piece in entry.partition("="))
        if not equals:
            raise ValueError(f"model alias {entry!r}: write `name=` or `name=served-model`")
        for piece in (name, target) if target else (name,):
            if not _MODEL_NAME.fullmatch(piece):
                raise ValueError(f"model alias {entry!r}: {piece!r} is not a model name")
        if name in pairs:
            raise ValueError(f"model alias {name!r} is given twice")
        pairs[name] = target
    if len(pairs) > MAX_ALIASES:
        raise ValueError(f"at most {MAX_ALIASES} model aliases")
    return tuple(pairs.items())


def error_body(
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    kind: str = "invalid_request_error",
) -> bytes:
    body = ErrorBody(message=message, type=kind, param=param, code=code)
    return encoder.encode(ErrorResponse(error=body))


def split_segment(segment: Segment, words: Sequence[Word], *, joiner: str = " ") -> list[Segment]:
    """Cut `segment` into cues at sentence ends, pauses, or the size limits (see module doc).

    `words` are the segment's words; without them the segment is one cue. `joiner` goes
    between words ("" for languages written without spaces)."""
    if not words:
        return [segment]
    groups: list[list[Word]] = [[]]
    for index, word in enumerate(words):
        group = groups[-1]
        group.append(word)
        following = words[index + 1] if index + 1 < len(words) else None
        if following is None:
            break
        length = len(joiner.join(w.word for w in group))
        spoken = word.end - group[0].start
        sentence_end = word.word.endswith((".", "?", "!")) and spoken >= 1.0
        clause_end = word.word.endswith((",", ";", ":")) and spoken >= MAX_CUE_S / 2
        pause = following.start - word.end >= CUE_PAUSE_S
        too_long = (
            following.end - group[0].start > MAX_CUE_S
            or length + len(joiner) + len(following.word) > MAX_CUE_CHARS
        )
        if too_long and not (sentence_end or clause_end or pause):
            split = _at_last_mark(group)  # rather after a comma than mid-phrase
            if len(split) == 2:
                groups[-1:] = split  # the words after the mark stay open
                continue
        if sentence_end or clause_end or pause or too_long:
            groups.append([])
    cues: list[Segment] = []
    cursor = segment.start
    for index, group in enumerate(groups):
        last = index == len(groups) - 1
        start = min(max(cursor, group[0].start), segment.end)
        end = segment.end if last else min(max(group[-1].end, start), segment.end)
        cues.append(
            msgspec.structs.replace(
                segment,
                id=0,
                start=round(start, 3),
                end=round(end, 3),
                text=joiner.join(word.word for word in group),
            )
        )
        cursor = end
    return cues


def _at_last_mark(group: list[Word]) -> list[list[Word]]:
    """Split `group` after its last word that ends a clause, keeping the rest together."""
    for index in range(len(group) - 2, 0, -1):
        if group[index].word.endswith((",", ";", ":", ".", "?", "!")):
            return [group[: index + 1], group[index + 1 :]]
    return [group]


def renumber(segments: Sequence[Segment]) -> list[Segment]:
    return [msgspec.structs.replace(segment, id=index) for index, segment in enumerate(segments)]


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"


def to_srt(segments: Sequence[Segment]) -> str:
    blocks = [
        f"{number}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n{cue.text.strip()}\n"
        for number, cue in enumerate(segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Sequence[Segment]) -> str:
    blocks = [
        f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n{cue.text.strip()}\n"
        for cue in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_text(text: str) -> str:
    return text + "\n"
