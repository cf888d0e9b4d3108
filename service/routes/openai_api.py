"""OpenAI's audio API over the shared transcriber: `POST /v1/audio/transcriptions`,
`POST /v1/audio/translations`, `GET /v1/models`, `GET /v1/models/{model}`.

Admission (the upload caps and rate limits), the request reading (size limit and read
deadline), decoding and the model call (cancelled if the client goes) are
`service.routes.uploads.Uploads`'; this module checks OpenAI's form fields and renders OpenAI's
shapes (`protocol/openai.py`).

Fields: `file` (required), `model` (required: the loaded model's name or one of its aliases,
`service.routes.openai_models`), `language` (ISO 639-1; a name is accepted too), `prompt`,
`response_format` (`json` default, `text`, `srt`, `vtt`, `verbose_json`), `temperature` (0–1,
accepted; decoding is beam search), `timestamp_granularities[]` (`segment`, `word`: words are
listed in `verbose_json`), `stream` (`true`: server-sent events as the file is transcribed,
`service.routes.openai_stream`, for every model name, with `json` or `text`; OpenAI refuses
the other formats on its streaming models, and so does Chorus; translations do not stream, at
OpenAI neither), `include[]` (`logprobs` is refused: the decoder here does not return token
log probabilities). `srt`, `vtt` and `verbose_json` ask the model for word timings, used to cut
subtitle-sized cues; `json` and `text` do not (faster).

The transcriptions route is an ASGI endpoint rather than a request-response one, since a
streamed answer is written as it goes, while the upload's slot and its form stay open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import msgspec
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from actors.transcriber.files import FileOptions, FileSegment, FileTranscript
from protocol.dialects.languages import language_name
from protocol.native import MAX_PROMPT_CHARS
from protocol.openai import (
    MEDIA_TYPES,
    RESPONSE_FORMATS,
    UNSPACED,
    ModelAliases,
    ResponseFormat,
    Segment,
    Transcription,
    VerboseTranscription,
    Word,
    encoder,
    error_body,
    renumber,
    split_segment,
    to_srt,
    to_text,
    to_vtt,
)
from service.routes.openai_models import get_model, list_models, served
from service.routes.openai_stream import stream_transcript
from service.routes.uploads import UploadError, Uploads, form_language
from service.session.ports import StreamOptions

STREAMED_FORMATS = ("json", "text")
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


class _Transcriptions:
    """`POST /v1/audio/transcriptions`, as an ASGI app: a streamed answer needs `send`."""

    def __init__(self, uploads: Uploads) -> None:
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await _errors(lambda: _transcribe(self.uploads, request, "transcribe", send))
        if response is not None:
            await response(scope, receive, send)


def openai_routes(uploads: Uploads) -> list[BaseRoute]:
    async def translations(request: Request) -> Response | None:
        return await _errors(lambda: _transcribe(uploads, request, "translate", None))

    return [
        Route("/v1/audio/transcriptions", _Transcriptions(uploads), methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    ]


@attrs.frozen
class _Asked:
    """A request's checked fields: how to answer, and what to ask of the transcription."""

    fmt: ResponseFormat
    granularities: frozenset[str]
    file_options: FileOptions
    stream: bool


async def _errors(handler: Callable[[], Awaitable[Response | None]]) -> Response | None:
    try:
        return await handler()
    except UploadError as error:
        kind = "server_error" if error.status >= 500 else "invalid_request_error"
        body = error_body(error.message, param=error.param, code=error.code, kind=kind)
        return Response(body, error.status, error.headers, "application/json")


def _text_field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UploadError(400, "invalid_value", f"`{name}` must be text", name)
    return value


def _prompt(form: FormData) -> str | None:
    """The `prompt` field's last `MAX_PROMPT_CHARS` characters, as on live sessions (Whisper
    keeps only the prompt's last 223 tokens anyway, and OpenAI takes a longer one the same
    way; a megabyte of prompt cost the model's thread its tokenizing for every utterance)."""
    prompt = _text_field(form, "prompt") or None
    return None if prompt is None else prompt[-MAX_PROMPT_CHARS:]


async def _transcribe(
    uploads: Uploads, request: Request, task: str, send: Send | None
) -> Response | None:
    """One upload, answered once or (`stream`, with a `send` to write to) as it goes."""
    async with uploads.admit(request) as runtime, uploads.open_form(request) as form:
        asked = _options(form, runtime.options, runtime.settings.model_aliases, task)
        data = await uploads.uploaded_file(form)
        if asked.stream and send is not None:
            await stream_transcript(
                uploads, request, runtime.transcriber, data, asked.file_options, send
            )
            return None
        transcript = await uploads.transcribe(
            request, runtime.transcriber, data, asked.file_options, not_audio=400
        )
    body = render(transcript, asked.fmt, task=task, words="word" in asked.granularities)
    return Response(body, 200, media_type=MEDIA_TYPES[asked.fmt])


def _options(form: FormData, options: StreamOptions, aliases: ModelAliases, task: str) -> _Asked:
    """OpenAI's form fields, checked."""
    _check_model(_text_field(form, "model"), options.model, aliases)
    response_format = _text_field(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise UploadError(
            400,
            "invalid_value",
            f"response_format {response_format!r} is not one of {', '.join(RESPONSE_FORMATS)}",
            "response_format",
        )
    fmt: ResponseFormat = response_format
    temperature = _text_field(form, "temperature") or "0"
    try:
        if not 0.0 <= float(temperature) <= 1.0:
            raise ValueError(temperature)
    except ValueError:
        raise UploadError(
            400, "invalid_value", "temperature must be a number in [0, 1]", "temperature"
        ) from None
    stream = _stream(form, fmt, task)
    _check_include(form)
    if task == "translate" and not options.multilingual:
        raise UploadError(
            400,
            "unsupported_task",
            f"model {options.model} is English-only: it cannot translate",
            "model",
        )
    granularities = frozenset(str(value) for value in form.getlist("timestamp_granularities[]"))
    if granularities - {"word", "segment"}:
        raise UploadError(
            400,
            "invalid_value",
            "timestamp_granularities[] takes `word` and `segment`",
            "timestamp_granularities[]",
        )
    file_options = FileOptions(
        language=form_language(form.get("language"), options),
        task=task,
        prompt=_prompt(form),
        words=fmt in ("srt", "vtt", "verbose_json"),
    )
    return _Asked(fmt, granularities, file_options, stream)


def _check_model(model: str | None, served_model: str, aliases: ModelAliases) -> None:
    if not model:
        raise UploadError(400, "missing_model", "you must provide a `model`", "model")
    names = served(served_model, aliases)
    if model not in names:
        raise UploadError(
            400,
            "model_not_found",
            f"model {model!r} is not served here (use one of: {', '.join(names)})",
            "model",
        )


def _stream(form: FormData, fmt: ResponseFormat, task: str) -> bool:
    """The `stream` field (`true` or `false` as the `openai` client writes them; 1 or 0)."""
    value = (_text_field(form, "stream") or "false").strip().lower()
    if value not in BOOLEANS:
        raise UploadError(400, "invalid_value", "`stream` must be true or false", "stream")
    if BOOLEANS[value] and task == "translate":
        raise UploadError(
            400, "unsupported_value", "translations do not stream (at OpenAI neither)", "stream"
        )
    if BOOLEANS[value] and fmt not in STREAMED_FORMATS:
        raise UploadError(
            400,
            "unsupported_value",
            f"response_format {fmt!r} cannot stream: use json or text with stream=true",
            "response_format",
        )
    return BOOLEANS[value]


def _check_include(form: FormData) -> None:
    """`include[]`: OpenAI's one value, `logprobs`, is refused rather than left out unsaid."""
    for value in (*form.getlist("include[]"), *form.getlist("include")):
        if value != "logprobs":
            raise UploadError(400, "invalid_value", "include[] takes only `logprobs`", "include[]")
        raise UploadError(
            400,
            "unsupported_value",
            "logprobs are not available: this server's decoder does not return token log "
            "probabilities",
            "include[]",
        )


def render(transcript: FileTranscript, fmt: ResponseFormat, *, task: str, words: bool) -> bytes:
    """A transcribed file in one of OpenAI's response formats."""
    joiner = "" if transcript.language in UNSPACED else " "
    text = joiner.join(segment.text for segment in transcript.segments if segment.text)
    if fmt == "json":
        return encoder.encode(Transcription(text=text))
    if fmt == "text":
        return to_text(text).encode()
    cues = renumber(
        [
            cue
            for segment in transcript.segments
            for cue in split_segment(*_openai_segment(segment), joiner=joiner)
        ]
    )
    if fmt == "srt":
        return to_srt(cues).encode()
    if fmt == "vtt":
        return to_vtt(cues).encode()
    verbose = VerboseTranscription(
        task="translate" if task == "translate" else "transcribe",
        language="english" if task == "translate" else language_name(transcript.language),
        duration=transcript.duration_s,
        text=text,
        segments=cues,
        words=[word for segment in transcript.segments for word in _openai_segment(segment)[1]]
        if words
        else None,
    )
    return msgspec.json.encode(verbose)


def _openai_segment(segment: FileSegment) -> tuple[Segment, list[Word]]:
    words = [Word(word=word.word, start=word.start, end=word.end) for word in segment.words]
    return (
        Segment(
            id=segment.index,
            seek=round(segment.start * 100),
            start=segment.start,
            end=segment.end,
            text=segment.text,
            avg_logprob=segment.avg_logprob,
            compression_ratio=segment.compression_ratio,
            no_speech_prob=segment.no_speech_prob,
        ),
        words,
    )
