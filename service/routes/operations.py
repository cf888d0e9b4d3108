"""What the HTTP routes answer, as data: the table of operations (`OPERATIONS`) that
`service.routes.openapi` turns into the OpenAPI document, with the response types no route
module defines (`/health`'s, `/v1/tickets`') and what msgspec cannot say (multipart forms,
parameters, the WebSocket routes). No state, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import msgspec

from protocol import chatserver, openai
from service.policy.refusal import RefusalBody
from service.routes.sessions import SessionDetailOut, SessionPageOut

__all__ = ["OPENAI_FORMATS", "OPERATIONS", "WEBSOCKETS", "Field", "Health", "Operation", "Schema"]

OPENAI_FORMATS = "<OpenAI's response formats>"  # a response body: JSON, text, SRT or WebVTT
Schema = dict[str, Any]


class HealthLimits(msgspec.Struct, kw_only=True):
    backend: str
    healthy: bool
    fail_policy: str
    last_error: str | None = None


class HealthStore(msgspec.Struct, kw_only=True):
    writes: int
    queue: int
    failed: int
    failing: bool


class HealthDisk(msgspec.Struct, kw_only=True):
    low: bool
    free_bytes: int | None = None
    min_free_bytes: int | None = None


class HealthTranscriber(msgspec.Struct, kw_only=True):
    batches: int
    items: int
    batch_sizes: dict[str, int]
    mean_batch_size: float
    queue: int
    busy_s: float
    dropped: int
    failed: int
    workers: int


class Health(msgspec.Struct, kw_only=True):
    """`GET /health` (written by `service.routes.health`; `tests/e2e/test_api_docs.py` reads a real
    answer back through this type). With API keys configured, a caller without a key gets only
    `status`, a tenant's key adds `model`, `languages`, `degraded` and `died`; the figures
    (sessions, queues, disk) and error texts (`last_error`, `died_of`) are for callers that see
    every tenant (an admin key, or a server without keys)."""

    status: Literal["ok", "degraded", "starting", "stopped", "failed"]
    model: str | None = None
    sessions: int | None = None
    languages: list[str] | None = None
    limits: HealthLimits | None = None
    store: HealthStore | None = None
    disk: HealthDisk | None = None
    transcriber: HealthTranscriber | None = None
    capacity: dict[str, float | int | None] | None = None
    degraded: list[str] | None = None
    died: list[str] | None = None
    died_of: dict[str, str] | None = None


class TicketOut(msgspec.Struct, kw_only=True):
    """`POST /v1/tickets`: a single-use WebSocket ticket (`service.policy.tickets`)."""

    ticket: str
    expires_in: float


@attrs.frozen
class Field:
    """A form field or a parameter, as an OpenAPI schema fragment."""

    name: str
    schema: Schema
    description: str = ""
    required: bool = False


FILE = Field(
    "file",
    {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"},
    "the audio file (WAV, WebM, Ogg, MP3, M4A, FLAC, ...)",
    required=True,
)


@attrs.frozen
class Operation:
    method: Literal["get", "post", "delete"]
    path: str
    summary: str
    tag: str
    # status → (description, body: a msgspec type, a list of them (any of), a media type of
    # text, `OPENAI_FORMATS`, or None)
    responses: Mapping[int, tuple[str, Any]]
    form: Sequence[Field] = ()
    parameters: Sequence[Field] = ()  # in the path where the path names them, else the query
    public: bool = False


UPLOAD_ERRORS: Mapping[int, str] = {
    400: "a missing or bad field; an empty, corrupt or truncated file",
    408: "the body did not arrive in time",
    413: "over the size or length limit",
    429: "over the client's rate limit or upload cap (`Retry-After`)",
    503: "busy, or the model is not running (`Retry-After` when busy)",
}
OPENAI_FORM = (
    FILE,
    Field(
        "model",
        {"type": "string"},
        "the loaded model's name or an alias (`whisper-1`, …: `GET /v1/models`)",
        required=True,
    ),
    Field("prompt", {"type": "string"}, "text the transcript should follow"),
    Field(
        "response_format",
        {"type": "string", "enum": list(openai.RESPONSE_FORMATS), "default": "json"},
    ),
    Field("temperature", {"type": "number", "minimum": 0, "maximum": 1}, "accepted; beam search"),
)
OPENAI_RESPONSES: Mapping[int, tuple[str, Any]] = {
    200: ("the transcript (`json`, `verbose_json`; `text`, `srt`, `vtt` as text)", OPENAI_FORMATS),
    **{status: (text, openai.ErrorResponse) for status, text in UPLOAD_ERRORS.items()},
}
SESSION = Field("session_id", {"type": "string"}, required=True)
SESSION_ERRORS: Mapping[int, tuple[str, Any]] = {
    404: ("no such session (or another tenant's)", RefusalBody),
    409: ("the session is still live", RefusalBody),
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/health",
        "Server health",
        "server",
        {
            200: ("ok or degraded (without a key where keys are set: the status alone)", Health),
            503: ("starting, stopped, or an actor died", Health),
        },
        public=True,
    ),
    Operation(
        "get",
        "/metrics",
        "Prometheus metrics (an admin key where keys are set)",
        "server",
        {
            200: ("the metrics in Prometheus' text format", "text/plain"),
            401: ("no key", RefusalBody),
            403: ("a tenant's key: the metrics count every tenant's work", RefusalBody),
        },
    ),
    Operation(
        "post",
        "/v1/tickets",
        "A single-use WebSocket ticket (valid 60 s) for the caller's key",
        "server",
        {201: ("use it once as `?ticket=` (or wherever a key goes)", TicketOut)},
    ),
    Operation(
        "post",
        "/transcribe",
        "Transcribe a file (the ChatServer seed, 004)",
        "uploads",
        {
            200: (
                "`{transcript}`; `{transcript, language, duration}` with `?verbose=true`",
                [
                    chatserver.Transcript,
                    chatserver.VerboseTranscript,
                ],
            ),
            415: ("the file is not audio", chatserver.ChatServerError),
            **{
                status: (text, chatserver.ChatServerError) for status, text in UPLOAD_ERRORS.items()
            },
        },
        form=(
            FILE,
            Field(
                "language", {"type": "string"}, "a name or a code (`english`, `en`); none: detect"
            ),
        ),
        parameters=(
            Field("verbose", {"type": "boolean", "default": False}, "add language, duration"),
        ),
    ),
    Operation(
        "post",
        "/v1/audio/transcriptions",
        "Transcribe a file (OpenAI's audio API)",
        "uploads",
        OPENAI_RESPONSES,
        form=(
            *OPENAI_FORM,
            Field("language", {"type": "string"}, "ISO 639-1 code (a name is accepted too)"),
            Field(
                "timestamp_granularities[]",
                {"type": "array", "items": {"type": "string", "enum": ["segment", "word"]}},
            ),
            Field(
                "stream",
                {"type": "boolean", "default": False},
                "answer with server-sent `transcript.text.delta` events, then "
                "`transcript.text.done` (`json` and `text` only)",
            ),
            Field(
                "include[]",
                {"type": "array", "items": {"type": "string", "enum": ["logprobs"]}},
                "`logprobs` is refused (400): no token log probabilities here",
            ),
        ),
    ),
    Operation(
        "post",
        "/v1/audio/translations",
        "Translate a file into English (OpenAI's audio API)",
        "uploads",
        OPENAI_RESPONSES,
        form=OPENAI_FORM,
    ),
    Operation("get", "/v1/models", "Models (OpenAI)", "uploads", {200: ("", openai.ModelList)}),
    Operation(
        "get",
        "/v1/models/{model}",
        "One model (OpenAI)",
        "uploads",
        {200: ("", openai.Model), 404: ("unknown model", openai.ErrorResponse)},
        parameters=(Field("model", {"type": "string"}, required=True),),
    ),
    Operation(
        "get",
        "/v1/sessions",
        "Stored sessions, newest first",
        "sessions",
        {200: ("a page of sessions", SessionPageOut), 400: ("bad limit or cursor", RefusalBody)},
        parameters=(
            Field("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
            Field("next", {"type": "string"}, "the cursor from the previous page's `next`"),
            Field("client", {"type": "string"}, "one client's sessions (admin keys only)"),
        ),
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}",
        "One session with its utterances",
        "sessions",
        {200: ("", SessionDetailOut), **SESSION_ERRORS},
        parameters=(SESSION,),
    ),
    Operation(
        "delete",
        "/v1/sessions/{session_id}",
        "Delete a session and its audio",
        "sessions",
        {204: ("deleted", None), **SESSION_ERRORS},
        parameters=(SESSION,),
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}/audio",
        "A session's recording (WAV; `Range` answered with 206)",
        "sessions",
        {200: ("16 kHz mono 16-bit WAV", "audio/wav"), **SESSION_ERRORS},
        parameters=(SESSION,),
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}/events",
        "A session's finals as server-sent events: the stored ones, then live ones, then `end`",
        "sessions",
        {
            200: ("`event: final` (data: an utterance), then `event: end`", "text/event-stream"),
            404: SESSION_ERRORS[404],
            429: ("the session has as many followers as it takes", RefusalBody),
            503: ("the store cannot be read now", RefusalBody),
        },
        parameters=(SESSION,),
    ),
)

WEBSOCKETS: Mapping[str, str] = {
    "/v1/stream": "Chorus's own protocol: binary PCM or encoded audio in, JSON frames out",
    "/v1/listen": "Deepgram's live API (`Results`, `UtteranceEnd`, `Metadata`)",
    "/v1/twilio": "Twilio Media Streams: a call's two tracks (base64 mu-law) as two channels",
    "/v1/realtime": "OpenAI Realtime transcription (`?intent=transcription`; GA events)",
    "/v2/listen": "Deepgram Flux: conversational turns (`TurnInfo`, `Configure`)",
    "/ws/v1/speech-to-text": "Speech-to-Text Backend API (seed 002): `event`-tagged JSON",
    "/ws/{client_id}": "Real-Time Call Intelligence (seed 001): `audio_chunk` in, sentiment out",
    "/ws": "Live Audio Transcript / Audio WebSocket API (seeds 000, 003): base64 audio",
}
