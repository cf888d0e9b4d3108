"""Size, time and concurrency limits, the admission gate for sessions, and the upload cap.

`Limits` is the configuration (each from an environment variable, each with a default), read
once at start-up (`SecurityConfig.from_env()`, or given to `create_app()`) and handed down. The
session pipeline enforces the frame, message, idle, send and session-length limits and sizes its
stage channels with `stage_queue_size`: `session_limits()` is the one place its
`SessionLimits` are made from these, and the defaults they share are the pipeline's own
(`service/session/ports.py`).
This module enforces the rest:

* `SessionGate` counts live sessions per client and in total. `admit(client)` either returns an
  `Admission` (a context manager that gives the slot back on exit, even on error or cancel) or
  raises `Refusal`: 429 for a client with too many sessions, 503 + `Retry-After` when the server
  is full. It is plain state touched only from the trio thread, so it needs no lock.
* `BodyLimitMiddleware` refuses an HTTP body over `max_upload_bytes` with 413: at once from
  `Content-Length`, or as soon as a streamed body passes the cap (nothing more is read).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol

import attrs
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.policy.refusal import Refusal
from service.session.ports import SessionLimits

_MiB = 1 << 20
_SESSION = SessionLimits()  # the session pipeline's defaults are the server's


def _positive(environ: Mapping[str, str], name: str, default: float, kind: type) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name} must be a {kind.__name__}, not {text!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive")
    return float(value)


@attrs.frozen
class Limits:
    max_frame_bytes: int = _SESSION.max_frame_bytes
    max_message_bytes: int = _SESSION.max_message_bytes
    # one base64 `audio` message (or binary frame) of a whole recording on `WS /ws`
    max_audio_message_bytes: int = 25 * _MiB
    max_upload_bytes: int = 100 * _MiB
    max_upload_s: float = (
        4 * 3600.0
    )  # audio one upload may decode to (a 40 kB file can claim hours)
    max_session_s: float = _SESSION.max_session_s
    idle_timeout_s: float = _SESSION.idle_timeout_s
    # keepalives alone hold a session this long at most
    audio_idle_timeout_s: float = _SESSION.audio_idle_timeout_s
    send_timeout_s: float = _SESSION.send_timeout_s  # a client that reads nothing: dropped
    stage_queue_size: int = _SESSION.queue_size  # items per channel between a session's stages
    max_sessions_per_client: int = 10
    max_sessions: int = 200
    max_uploads_per_client: int = 2  # uploads in flight (body, decode, transcription)
    max_uploads: int = 8
    upload_read_timeout_s: float = 60.0  # the whole body must arrive within this (slowloris)
    # and at this average rate after its first `upload_rate_grace_s` (slow bodies would hold
    # the upload slots)
    upload_min_bytes_per_s: float = 16 * 1024
    upload_rate_grace_s: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Limits:
        """`CHORUS_MAX_FRAME_BYTES`, `…_MESSAGE_BYTES`, `…_AUDIO_MESSAGE_BYTES`,
        `…_UPLOAD_BYTES`, `…_UPLOAD_S`,
        `CHORUS_MAX_SESSION_S`,
        `CHORUS_IDLE_TIMEOUT_S`, `CHORUS_AUDIO_IDLE_TIMEOUT_S`, `CHORUS_SEND_TIMEOUT_S`,
        `CHORUS_STAGE_QUEUE_SIZE`, `CHORUS_MAX_SESSIONS_PER_CLIENT`,
        `CHORUS_MAX_SESSIONS`, `CHORUS_MAX_UPLOADS_PER_CLIENT`, `CHORUS_MAX_UPLOADS`,
        `CHORUS_UPLOAD_READ_TIMEOUT_S`, `CHORUS_UPLOAD_MIN_BYTES_PER_S`,
        `CHORUS_UPLOAD_RATE_GRACE_S`."""
        default = cls()

        def whole(name: str, value: int) -> int:
            return int(_positive(environ, name, value, int))

        def seconds(name: str, value: float) -> float:
            return _positive(environ, name, value, float)

        return cls(
            max_frame_bytes=whole("CHORUS_MAX_FRAME_BYTES", default.max_frame_bytes),
            max_message_bytes=whole("CHORUS_MAX_MESSAGE_BYTES", default.max_message_bytes),
            max_audio_message_bytes=whole(
                "CHORUS_MAX_AUDIO_MESSAGE_BYTES", default.max_audio_message_bytes
            ),
            max_upload_bytes=whole("CHORUS_MAX_UPLOAD_BYTES", default.max_upload_bytes),
            max_upload_s=seconds("CHORUS_MAX_UPLOAD_S", default.max_upload_s),
            max_session_s=seconds("CHORUS_MAX_SESSION_S", default.max_session_s),
            idle_timeout_s=seconds("CHORUS_IDLE_TIMEOUT_S", default.idle_timeout_s),
            audio_idle_timeout_s=seconds(
                "CHORUS_AUDIO_IDLE_TIMEOUT_S", default.audio_idle_timeout_s
            ),
            send_timeout_s=seconds("CHORUS_SEND_TIMEOUT_S", default.send_timeout_s),
            stage_queue_size=whole("CHORUS_STAGE_QUEUE_SIZE", default.stage_queue_size),
            max_sessions_per_client=whole(
                "CHORUS_MAX_SESSIONS_PER_CLIENT", default.max_sessions_per_client
            ),
            max_sessions=whole("CHORUS_MAX_SESSIONS", default.max_sessions),
            max_uploads_per_client=whole(
                "CHORUS_MAX_UPLOADS_PER_CLIENT", default.max_uploads_per_client
            ),
            max_uploads=whole("CHORUS_MAX_UPLOADS", default.max_uploads),
            upload_read_timeout_s=seconds(
                "CHORUS_UPLOAD_READ_TIMEOUT_S", default.upload_read_timeout_s
            ),
            upload_min_bytes_per_s=_positive(
                environ,
                "CHORUS_UPLOAD_MIN_BYTES_PER_S",
                default.upload_min_bytes_per_s,
                float,
            ),
            upload_rate_grace_s=seconds("CHORUS_UPLOAD_RATE_GRACE_S", default.upload_rate_grace_s),
        )

    def session_limits(self) -> SessionLimits:
        """What one session's pipeline enforces (`service/session/`), from these."""
        return SessionLimits(
            max_frame_bytes=self.max_frame_bytes,
            max_message_bytes=self.max_message_bytes,
            idle_timeout_s=self.idle_timeout_s,
            audio_idle_timeout_s=self.audio_idle_timeout_s,
            max_session_s=self.max_session_s,
            send_timeout_s=self.send_timeout_s,
            queue_size=self.stage_queue_size,
        )

    @property
    def largest_message_bytes(self) -> int:
        """The largest WebSocket message any route accepts: the ASGI server's own limit."""
        return max(self.max_frame_bytes, self.max_message_bytes, self.max_audio_message_bytes)


@attrs.frozen
class GateStatistics:
    sessions: int
    clients: int
    max_sessions: int
    max_sessions_per_client: int
    refused_per_client: int
    refused_full: int


class Releasable(Protocol):
    """What an admitted connection gives back: one `Admission`, or a multichannel call's."""

    def release(self) -> None: ...


class Admission:
    """One admitted session's slot; leaving the `with` (or `release()`) gives it back."""

    def __init__(self, gate: SessionGate, client: str) -> None:
        self._gate, self.client = gate, client
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._gate._release(self.client)

    def __enter__(self) -> Admission:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class SessionGate:
    """Counts live sessions per client and in total; refuses what would go over."""

    def __init__(self, max_sessions: int, max_per_client: int, *, retry_after_s: int = 5) -> None:
        self.max_sessions, self.max_per_client = max_sessions, max_per_client
        self.retry_after_s = retry_after_s
        self._live: Counter[str] = Counter()
        self._total = 0
        self._refused_per_client = 0
        self._refused_full = 0

    @classmethod
    def from_limits(cls, limits: Limits) -> SessionGate:
        return cls(limits.max_sessions, limits.max_sessions_per_client)

    @property
    def sessions(self) -> int:
        return self._total

    def admit(self, client: str) -> Admission:
        """Take a slot for `client` or raise `Refusal` (429 for the client, 503 when full)."""
        if self._total >= self.max_sessions:
            self._refused_full += 1
            raise Refusal(
                503, "server_full", "too many live sessions", retry_after=self.retry_after_s
            )
        if self._live[client] >= self.max_per_client:
            self._refused_per_client += 1
            raise Refusal(
                429,
                "too_many_sessions",
                f"at most {self.max_per_client} live sessions per client",
                retry_after=self.retry_after_s,
            )
        self._live[client] += 1
        self._total += 1
        return Admission(self, client)

    def _release(self, client: str) -> None:
        self._total -= 1
        self._live[client] -= 1
        if not self._live[client]:
            del self._live[client]

    def statistics(self) -> GateStatistics:
        return GateStatistics(
            sessions=self._total,
            clients=len(self._live),
            max_sessions=self.max_sessions,
            max_sessions_per_client=self.max_per_client,
            refused_per_client=self._refused_per_client,
            refused_full=self._refused_full,
        )


class UploadTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class BodyLimitMiddleware:
    """413 for HTTP request bodies over `max_bytes` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise UploadTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except UploadTooLarge:
            if started:
                raise
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = {
            "message": f"request body over {self.max_bytes} bytes",
            "code": "file_too_large",
            "type": "invalid_request_error",
            "param": "file",
        }
        response = JSONResponse({"error": error}, 413)
        response.headers["connection"] = "close"
        await response(scope, receive, send)
