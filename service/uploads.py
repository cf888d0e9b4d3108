"""File uploads: the OpenAI audio API and the ChatServer seed's `POST /transcribe`.

Each request owns its work: it reads the multipart body (at most `CHORUS_MAX_UPLOAD_BYTES`,
default 100 MiB, read from the environment per request; a bigger body is refused with 413 as
soon as its `Content-Length` or its bytes say so), then `actors.files.transcribe_file` decodes
it in a worker thread (at most `DECODES_AT_ONCE` uploads decode at once) and puts its segments
on the shared transcriber at `background` priority, so live sessions keep their latency. A
client that disconnects cancels the request's task; the actor drops the jobs it has not run.

Routes: `POST /v1/audio/transcriptions`, `POST /v1/audio/translations`, `GET /v1/models`,
`GET /v1/models/{model}` (OpenAI's shapes, `protocol/openai.py`; errors as
`{"error": {"message", "type", "param", "code"}}`), and `POST /transcribe` (`file` +
`language` as a name or a code → `{"transcript", "language", "duration"}`; errors as
`{"error": {"code", "message"}}`). Uploads are admitted like sessions
(`service.admission.admit`: the client's rate limit, and 503 while live sessions lag).

Status codes: 400 for a missing or bad field, an empty, corrupt or truncated file (OpenAI
routes also use 400 for a file that is not audio, as OpenAI does, so its client raises
`BadRequestError`); 415 on `/transcribe` for a file that is not audio or has no decodable
audio stream; 413 over the size limit; 500 when the model fails; 503 while it is not running.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import trio
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message

from actors.decode import UndecodableAudio
from actors.files import FileOptions, FileTranscript, transcribe_file
from actors.transcriber import TranscriberClosed, TranscriptionFailed
from protocol.dialects.languages import language_code
from service.admission import admit

MAX_UPLOAD_BYTES = 100 << 20
DECODES_AT_ONCE = 2
NOT_AUDIO = frozenset({"not_audio", "no_audio_stream", "unsupported_codec"})


class UploadError(Exception):
    """A request the upload routes refuse; each route renders it in its own error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


async def check_admission(request: Request) -> None:
    """Refuse an upload the way a session would be refused: over the client's rate limit
    (429) or while the transcriber is not keeping up with live sessions (503)."""
    client = request.scope.get("state", {}).get("client") or "anonymous"
    refusal = await admit(request.app.state, client, live_session=False)
    if refusal is not None:
        raise UploadError(
            refusal.status_code, refusal.code, refusal.message, retry_after=refusal.retry_after
        )


def max_upload_bytes() -> int:
    text = os.environ.get("CHORUS_MAX_UPLOAD_BYTES", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else MAX_UPLOAD_BYTES


def upload_routes() -> list[BaseRoute]:
    from service.openai_api import openai_routes

    uploads = Uploads(trio.CapacityLimiter(DECODES_AT_ONCE))
    return [
        *openai_routes(uploads),
        Route("/transcribe", uploads.transcribe_seed, methods=["POST"]),
    ]


class Uploads:
    """What the upload routes share: the decode limiter."""

    def __init__(self, decodes: trio.CapacityLimiter) -> None:
        self.decodes = decodes

    @asynccontextmanager
    async def open_form(self, request: Request) -> AsyncIterator[FormData]:
        """The multipart body, refused with 413 once it passes the size limit; the uploaded
        file's spool is closed when the block ends, however it ends."""
        limit = max_upload_bytes()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        received = 0

        async def receive() -> Message:
            nonlocal received
            message = await request.receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        limited = Request(request.scope, receive)
        try:
            form = await limited.form(max_files=1, max_fields=64)
        except UploadError:
            raise
        except Exception as error:  # python-multipart's and Starlette's parse errors
            raise UploadError(400, "invalid_form", f"cannot read the form: {error}") from None
        try:
            yield form
        finally:
            await form.close()

    async def file_bytes(self, form: FormData) -> bytes:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise UploadError(400, "missing_file", "the form has no `file` part", "file")
        data = await upload.read()
        if not data:
            raise UploadError(400, "empty", "the uploaded file is empty (0 bytes)", "file")
        return data

    async def transcribe(
        self, request: Request, data: bytes, options: FileOptions, *, not_audio: int
    ) -> FileTranscript:
        """Decode and transcribe; decoding and model failures become `UploadError`s."""
        transcriber = getattr(request.app.state, "transcriber", None)
        if transcriber is None:
            raise UploadError(503, "not_ready", "the model is still loading")
        security = getattr(request.app.state, "security", None)
        if security is not None:
            options = attrs.evolve(options, max_seconds=security.limits.max_upload_s)
        try:
            return await transcribe_file(transcriber, data, options, decode_limiter=self.decodes)
        except UndecodableAudio as error:
            status = not_audio if error.kind in NOT_AUDIO else 400
            if error.kind == "too_long":
                status = 413
            raise UploadError(status, error.kind, error.reason, "file") from None
        except TranscriptionFailed as error:
            raise UploadError(500, "model_error", f"the model failed: {error}") from None
        except TranscriberClosed:
            raise UploadError(503, "not_running", "the transcriber is shutting down") from None

    async def transcribe_seed(self, request: Request) -> Response:
        """`POST /transcribe` (the ChatServer seed): `file` + `language` → `{"transcript"}`."""
        return await _seed_errors(self._transcribe_seed, request)

    async def _transcribe_seed(self, request: Request) -> Response:
        await check_admission(request)
        async with self.open_form(request) as form:
            language = form_language(form.get("language"), request)
            data = await self.file_bytes(form)
        options = FileOptions(language=language)
        transcript = await self.transcribe(request, data, options, not_audio=415)
        body = {
            "transcript": transcript.text,
            "language": transcript.language,
            "duration": transcript.duration_s,
        }
        return Response(_json(body), 200, media_type="application/json")


def form_language(value: object, request: Request) -> str | None:
    """A language name or code from a form → a code the model knows (None: detect)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    if not isinstance(value, str):
        raise UploadError(400, "invalid_language", "`language` must be text", "language")
    code = language_code(value)
    if code is None:
        raise UploadError(400, "invalid_language", f"unknown language {value!r}", "language")
    options = request.app.state.options
    if code not in options.languages:
        raise UploadError(
            400,
            "unsupported_language",
            f"model {options.model} does not know language {value!r}",
            "language",
        )
    return code


def _too_large(limit: int) -> UploadError:
    return UploadError(413, "file_too_large", f"the upload is over the {limit}-byte limit", "file")


def _json(value: object) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


async def _seed_errors(
    handler: Callable[[Request], Awaitable[Response]], request: Request
) -> Response:
    try:
        return await handler(request)
    except UploadError as error:
        body = {"error": {"code": error.code, "message": error.message}}
        return Response(_json(body), error.status, error.headers, "application/json")
