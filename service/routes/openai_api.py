"""OpenAI's audio API over the shared transcriber: `POST /v1/audio/transcriptions`,
`POST /v1/audio/translations`, `GET /v1/models`, `GET /v1/models/{model}`.

Admission (the upload caps and rate limits), the request reading (size limit and read
deadline), decoding and the model call (cancelled if the client goes) are
`service.routes.uploads.Uploads`'; this module checks OpenAI's form fields and renders OpenAI's
shapes (`protocol/openai.py`).

Fields: `file` (required), `model` (required: `whisper-1` or the loaded model's name),
`language` (ISO 639-1; a name is accepted too), `prompt`, `response_format` (`json` default,
`text`, `srt`, `vtt`, `verbose_json`), `temperature` (0–1, accepted; decoding is beam search),
`timestamp_granularities[]` (`segment`, `word`: words are listed in `verbose_json`). `stream`
is refused (400): uploads answer once. `srt`, `vtt` and `verbose_json` ask the model for word
timings, used to cut subtitle-sized cues; `json` and `text` do not (faster).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actors.transcriber.files import FileOptions, FileSegment, FileTranscript
from protocol.dialects.languages import language_name
from protocol.native import MAX_PROMPT_CHARS
from protocol.openai import (
    MEDIA_TYPES,
    RESPONSE_FORMATS,
    Model,
    ModelList,
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
from service.routes.uploads import UploadError, Uploads, form_language
from service.runtime import Runtime
from service.session.ports import StreamOptions

ALIASES = ("whisper-1",)
UNSPACED = frozenset({"zh", "ja", "yue", "th", "lo", "my", "km", "bo"})


def openai_routes(uploads: Uploads) -> list[BaseRoute]:
    async def transcriptions(request: Request) -> Response:
        return await _errors(lambda: _transcribe(uploads, request, "transcribe"))

    async def translations(request: Request) -> Response:
        return await _errors(lambda: _transcribe(uploads, request, "translate"))

    return [
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    ]


def _models(request: Request) -> list[Model]:
    return [Model(id=name) for name in (*ALIASES, Runtime.of(request).options.model)]


async def list_models(request: Request) -> Response:
    return Response(
        encoder.encode(ModelList(data=_models(request))), 200, media_type="application/json"
    )


async def get_model(request: Request) -> Response:
    name = request.path_params["model"]
    for model in _models(request):
        if model.id == name:
            return Response(encoder.encode(model), 200, media_type="application/json")
    body = error_body(f"The model '{name}' does not exist", param="model", code="model_not_found")
    return Response(body, 404, media_type="application/json")


async def _errors(handler: Callable[[], Awaitable[Response]]) -> Response:
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


async def _transcribe(uploads: Uploads, request: Request, task: str) -> Response:
    async with uploads.admit(request) as runtime, uploads.open_form(request) as form:
        fmt, granularities, file_options = _options(form, runtime.options, task)
        data = await uploads.uploaded_file(form)
        transcript = await uploads.transcribe(
            request, runtime.transcriber, data, file_options, not_audio=400
        )
    body = render(transcript, fmt, task=task, words="word" in granularities)
    return Response(body, 200, media_type=MEDIA_TYPES[fmt])


def _options(
    form: FormData, options: StreamOptions, task: str
) -> tuple[ResponseFormat, set[str], FileOptions]:
    """OpenAI's form fields, checked: (response format, timestamp granularities, options)."""
    model = _text_field(form, "model")
    if not model:
        raise UploadError(400, "missing_model", "you must provide a `model`", "model")
    if model not in (*ALIASES, options.model):
        names = ", ".join((*ALIASES, options.model))
        raise UploadError(
            400,
            "model_not_found",
            f"model {model!r} is not served here (use one of: {names})",
            "model",
        )
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
    if (_text_field(form, "stream") or "false").lower() == "true":
        raise UploadError(400, "unsupported_value", "streaming uploads are not supported", "stream")
    if task == "translate" and not options.multilingual:
        raise UploadError(
            400,
            "unsupported_task",
            f"model {options.model} is English-only: it cannot translate",
            "model",
        )
    granularities = {str(value) for value in form.getlist("timestamp_granularities[]")}
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
    return fmt, granularities, file_options


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
