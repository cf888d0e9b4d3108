"""File uploads: the OpenAI audio API and the ChatServer seed's `POST /transcribe`.

Each request owns its work, in three steps that every upload route takes through `Uploads`:

1. `admit`, before any of the body is read: a slot under the upload caps (`UploadSlots`: at
   most `Limits.max_uploads_per_client` in flight per client, 429, and `Limits.max_uploads` in
   all, 503, both with `Retry-After`), then the client's rate limit and the transcriber's lag
   (`service.session.admission.admit`, as for sessions). The slot is held until the request is
   answered, however it ends.
2. `open_form` reads the multipart body: at most `Limits.max_upload_bytes` (the app's limits,
   read once when the app is built into its one `Uploads`; 413 as soon as
   `Content-Length` or the bytes say so, chunked or not), and all of it within
   `Limits.upload_read_timeout_s` and at `Limits.upload_min_bytes_per_s` on average after its
   first `Limits.upload_rate_grace_s` (408 either way), so a body that trickles in (slowloris)
   gives its slot back whatever the ASGI server does.
3. `transcribe`: `actors.transcriber.files.transcribe_file` decodes in a worker thread (at most
   `DECODES_AT_ONCE` at once) and puts the segments on the shared transcriber at `background`
   priority, so live sessions keep their latency. A child task watches for `http.disconnect`
   and cancels the work when the client goes; the actor drops the jobs it has not run.

Each route gets the app's `Runtime` once, from step 1 (`Uploads.admit`: 503 `not_running` in
the route's own error shape while the app is not running), and hands each step the pieces it
uses.

Routes: `POST /v1/audio/transcriptions`, `POST /v1/audio/translations`, `GET /v1/models`,
`GET /v1/models/{model}` (OpenAI's shapes, `protocol/openai.py`; errors as
`{"error": {"message", "type", "param", "code"}}`), and `POST /transcribe` (`file` +
`language` as a name or a code → `{"transcript"}`, as the seed's README shows, and
`{"transcript", "language", "duration"}` with `?verbose=true`; errors as
`{"detail", "error": {"code", "message"}}`, `protocol/chatserver.py`).

Status codes: 400 for a missing or bad field, an empty, corrupt or truncated file (OpenAI
routes also use 400 for a file that is not audio, as OpenAI does, so its client raises
`BadRequestError`); 415 on `/transcribe` for a file that is not audio or has no decodable
audio stream; 408 for a body slower than the deadline; 413 over the size limit; 429/503 over
the upload caps; 500 when the model fails (the detail goes to the log, not the client); 503
while the app is not running (`not_running`) or the transcriber is closing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import BinaryIO

import attrs
import trio
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive

from actors.audio.file_decoder import UndecodableAudio
from actors.transcriber.actor import TranscriberClosed, TranscriberHandle, TranscriptionFailed
from actors.transcriber.files import FileOptions, FileSegment, FileTranscript, transcribe_file
from protocol import chatserver
from protocol.dialects.languages import language_code
from service.policy.caller import Caller
from service.policy.limits import Limits, UploadTooLarge
from service.policy.refusal import drain_body
from service.runtime import NotRunning, Runtime
from service.session.admission import SessionServices, admit
from service.session.ports import StreamOptions

log = logging.getLogger("chorus.uploads")

DECODES_AT_ONCE = 2
RETRY_AFTER_S = 5
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


def _running(request: Request) -> Runtime:
    """The app's runtime; while the app is not running, 503 in the route's own error shape."""
    try:
        return Runtime.of(request)
    except NotRunning as refusal:
        raise UploadError(
            503, refusal.code, refusal.message, retry_after=refusal.retry_after
        ) from None


async def check_admission(services: SessionServices, client: str) -> None:
    """Refuse an upload the way a session would be refused: over the client's rate limit
    (429) or while the transcriber is not keeping up with live sessions (503)."""
    refusal = await admit(services, client, live_session=False)
    if refusal is not None:
        raise UploadError(
            refusal.status_code, refusal.code, refusal.message, retry_after=refusal.retry_after
        )


class UploadSlots:
    """Uploads in flight, per client and in total. Plain state touched only from the trio
    thread, so it needs no lock; the caps come from the caller's `Limits`."""

    def __init__(self) -> None:
        self._by_client: Counter[str] = Counter()
        self._total = 0

    @contextmanager
    def take(self, client: str, limits: Limits) -> Iterator[None]:
        """Hold one of `client`'s slots for the block, or raise `UploadError`: 429 for a client
        at its own cap, 503 when the server is at its cap."""
        if self._by_client[client] >= limits.max_uploads_per_client:
            raise UploadError(
                429,
                "too_many_uploads",
                f"at most {limits.max_uploads_per_client} uploads at once per client",
                retry_after=RETRY_AFTER_S,
            )
        if self._total >= limits.max_uploads:
            raise UploadError(
                503,
                "server_busy",
                "the server is transcribing as many uploads as it takes; try again shortly",
                retry_after=RETRY_AFTER_S,
            )
        self._by_client[client] += 1
        self._total += 1
        try:
            yield
        finally:
            self._total -= 1
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]


class Uploads:
    """What the upload routes share: the decode limiter, the upload slots and the limits."""

    def __init__(self, decodes: trio.CapacityLimiter, limits: Limits) -> None:
        self.decodes = decodes
        self.slots = UploadSlots()
        self.limits = limits

    @asynccontextmanager
    async def admit(self, request: Request) -> AsyncIterator[Runtime]:
        """Every upload route's first step, before a byte of the body is read: the app's
        runtime (503 `not_running` without one), a slot under the upload caps (checked first,
        so a refused upload spends no rate-limit token), then `check_admission`. The slot is
        given back when the block ends, however it ends."""
        admitted = False
        client = Caller.of(request).client
        try:
            runtime = _running(request)
            with self.slots.take(client, self.limits):
                await check_admission(runtime.sessions, client)
                admitted = True
                yield runtime
        except UploadError:
            if not admitted:
                await drain_body(request.receive)  # refused before the body: read a small one
            raise

    @asynccontextmanager
    async def open_form(self, request: Request) -> AsyncIterator[FormData]:
        """The multipart body, refused with 413 once it passes the size limit, and with 408 if
        it is not all there by the read deadline or falls below the minimum average rate
        after `Limits.upload_rate_grace_s` (a body that trickles holds an upload slot: issue
        21); the uploaded file's spool is closed when the block ends, however it ends."""
        limits = self.limits
        limit = limits.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        received = 0
        start = trio.current_time()
        deadline = start + limits.upload_read_timeout_s
        grace = limits.upload_rate_grace_s
        reading = trio.CancelScope(deadline=min(deadline, start + grace))

        async def receive() -> Message:
            nonlocal received
            message = await request.receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
                # the time by which the bytes so far fall below the minimum average rate
                slow = start + grace + received / limits.upload_min_bytes_per_s
                reading.deadline = min(deadline, slow)
            return message

        form: FormData | None = None
        with reading:
            form = await _read_form(Request(request.scope, receive), limit)
        if form is None:
            if reading.deadline < deadline:
                raise UploadError(
                    408,
                    "body_too_slow",
                    f"the upload arrived slower than {limits.upload_min_bytes_per_s:g} bytes/s",
                )
            raise UploadError(
                408,
                "body_timeout",
                f"the upload did not arrive within {limits.upload_read_timeout_s:g} s",
            )
        try:
            yield form
        finally:
            await form.close()

    async def uploaded_file(self, form: FormData) -> BinaryIO:
        """The form's `file` part, left where the parser spooled it (memory up to 1 MiB, then
        a temporary file): it is decoded from there piece by piece, never read whole. Valid
        until the `open_form` block ends."""
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise UploadError(400, "missing_file", "the form has no `file` part", "file")
        if not upload.size:
            raise UploadError(400, "empty", "the uploaded file is empty (0 bytes)", "file")
        return upload.file

    async def transcribe(
        self,
        request: Request,
        transcriber: TranscriberHandle,
        data: BinaryIO,
        options: FileOptions,
        *,
        not_audio: int,
        segments: trio.MemorySendChannel[FileSegment] | None = None,
    ) -> FileTranscript:
        """Decode and transcribe; decoding and model failures become `UploadError`s, and so
        does the client going away (`client_gone`), which cancels the work at once.
        `segments` gets the segments in order as they are ready (`transcribe_file`)."""
        options = attrs.evolve(options, max_seconds=self.limits.max_upload_s)
        # the outcome is a value: raised inside the nursery it would leave it in an
        # ExceptionGroup, which the routes' error renderers do not catch
        outcome: FileTranscript | UploadError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when_gone, request.receive, nursery.cancel_scope)
            outcome = await self._outcome(transcriber, data, options, not_audio, segments)
            nursery.cancel_scope.cancel()
        if outcome is None:
            raise UploadError(499, "client_gone", "the client disconnected")
        if isinstance(outcome, UploadError):
            raise outcome
        return outcome

    async def _outcome(
        self,
        transcriber: TranscriberHandle,
        data: BinaryIO,
        options: FileOptions,
        not_audio: int,
        segments: trio.MemorySendChannel[FileSegment] | None,
    ) -> FileTranscript | UploadError:
        try:
            return await transcribe_file(
                transcriber, data, options, decode_limiter=self.decodes, segments=segments
            )
        except UndecodableAudio as error:
            status = not_audio if error.kind in NOT_AUDIO else 400
            if error.kind == "too_long":
                status = 413
            return UploadError(status, error.kind, error.reason, "file")
        except TranscriptionFailed as error:
            log.error("the model failed on an upload", exc_info=error)
            return UploadError(500, "model_error", "the model failed to transcribe this file")
        except TranscriberClosed:
            return UploadError(503, "not_running", "the transcriber is shutting down")

    async def transcribe_seed(self, request: Request) -> Response:
        """`POST /transcribe` (the ChatServer seed): `file` + `language` → `{"transcript"}`."""
        return await _seed_errors(self._transcribe_seed, request)

    async def _transcribe_seed(self, request: Request) -> Response:
        async with self.admit(request) as runtime, self.open_form(request) as form:
            language = form_language(form.get("language"), runtime.options)
            data = await self.uploaded_file(form)
            options = FileOptions(language=language)
            transcript = await self.transcribe(
                request, runtime.transcriber, data, options, not_audio=415
            )
        body: chatserver.Transcript | chatserver.VerboseTranscript
        if _flag(request.query_params.get("verbose")):
            body = chatserver.VerboseTranscript(
                transcript=transcript.text,
                language=transcript.language,
                duration=transcript.duration_s,
            )
        else:
            body = chatserver.Transcript(transcript=transcript.text)
        return Response(chatserver.encoder.encode(body), 200, media_type="application/json")


async def _read_form(request: Request, limit: int) -> FormData:
    """`request`'s form; its failures as `UploadError`s, with no exception text for the client
    but Starlette's own (written for clients)."""
    try:
        return await request.form(max_files=1, max_fields=64)
    except UploadError:
        raise
    except UploadTooLarge:  # `BodyLimitMiddleware` counts the same bytes and may be first
        raise _too_large(limit) from None
    except HTTPException as error:  # Starlette's `MultiPartException`s
        raise UploadError(400, "invalid_form", f"cannot read the form: {error.detail}") from None
    except ClientDisconnect:
        raise UploadError(499, "client_gone", "the client disconnected") from None
    except Exception:  # python-multipart's and any other parser's: the detail is for the log
        log.info("an unreadable upload form", exc_info=True)
        raise UploadError(400, "invalid_form", "cannot read the multipart form") from None


async def _cancel_when_gone(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel `scope` when the server says the client disconnected (the body has been read,
    so `http.disconnect` is the only message left to come)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def form_language(value: object, options: StreamOptions) -> str | None:
    """A language name or code from a form → a code the model knows (None: detect)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    if not isinstance(value, str):
        raise UploadError(400, "invalid_language", "`language` must be text", "language")
    code = language_code(value)
    if code is None:
        raise UploadError(400, "invalid_language", f"unknown language {value!r}", "language")
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


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


async def _seed_errors(
    handler: Callable[[Request], Awaitable[Response]], request: Request
) -> Response:
    try:
        return await handler(request)
    except UploadError as error:
        body = chatserver.error_body(error.code, error.message)
        return Response(body, error.status, error.headers, "application/json")
