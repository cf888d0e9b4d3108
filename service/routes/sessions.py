"""REST over the store: `GET/DELETE /v1/sessions…` (list, one session, its audio, delete).

The routes hold no state: each request finds the store through the lookup the routes were made
with (in the app: the `StoreHandle` of its `Runtime`, which the lifespan opened) and answers
JSON encoded by msgspec, or the WAV file (Starlette's `FileResponse`: `Accept-Ranges: bytes`,
`Range` answered with 206, or 416 when it cannot be satisfied), or, when the recording is kept
in an object store and not on this replica's disk, the same answers streamed from the store
(`service/routes/stored_audio.py`). Errors are `{"error": {"code", "message"}}`: 400 for a bad
`limit`, cursor or range, 404 for an unknown session or a session without audio, 409 for a
session still live on any replica (its audio is still being written and it cannot be deleted
yet), 503 when the store is closed, its database or the recordings' object store cannot be
reached, or the app is not running.
Who may call them is decided in front of them (`service.policy.security.SecurityMiddleware`), and
whose sessions they show here: each API key is a tenant that sees only the sessions it made
(another tenant's session is a 404, as if it did not exist); an admin key (`CHORUS_ADMIN_KEYS`)
and a server without keys (single-tenant) see all, and only they may filter by `?client=`.

A page's `next` is opaque to clients: base64url of the (start time in microseconds, id) of the
last session on the page (`PagePosition`), nothing a caller has not just been shown. It is no
global counter, so its gaps cannot count other tenants' sessions, and forging one only moves
within the caller's own sessions, since the tenant filter is applied after it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from actors.store.actor import (
    PagePosition,
    SessionDetail,
    SessionLive,
    SessionNotFound,
    SessionRecord,
    StoreClosed,
    StoreError,
    StoreHandle,
)
from actors.store.recordings import RecordingsUnreachable
from service.policy.caller import Caller
from service.policy.refusal import Refusal
from service.routes.stored_audio import stored_audio_response
from service.runtime import Runtime

Endpoint = Callable[[Request], Awaitable[Response]]
StoreEndpoint = Callable[[StoreHandle, Request], Awaitable[Response]]
StoreLookup = Callable[[HTTPConnection], StoreHandle | None]  # None: no store here
DEFAULT_PAGE = 50
MAX_PAGE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
log = logging.getLogger("chorus.sessions")


class WordOut(msgspec.Struct):
    word: str
    start: float
    end: float
    confidence: float


class UtteranceOut(msgspec.Struct, omit_defaults=True):
    index: int
    start: float
    end: float
    text: str
    language: str
    confidence: float
    words: list[WordOut] | None
    channel: int | None = None  # a multichannel session's channel; absent for one channel


class _SessionFields(msgspec.Struct):
    """What the list and the detail both say of a session (in this order on the wire)."""

    id: str
    route: str
    client: str
    model: str
    language: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    duration_s: float | None


class SessionOut(_SessionFields):
    utterances: int
    has_audio: bool


class SessionPageOut(msgspec.Struct):
    sessions: list[SessionOut]
    next: str | None


class SessionDetailOut(_SessionFields):
    has_audio: bool
    utterances: list[UtteranceOut]
    transcript: str


_encoder = msgspec.json.Encoder()


def _json(value: msgspec.Struct) -> Response:
    return Response(_encoder.encode(value), media_type="application/json")


def _session_out(record: SessionRecord) -> SessionOut:
    return msgspec.convert(record, SessionOut, from_attributes=True)


def _detail_out(detail: SessionDetail) -> SessionDetailOut:
    fields = msgspec.structs.asdict(_session_out(detail.session))
    fields["utterances"] = msgspec.convert(
        detail.utterances, list[UtteranceOut], from_attributes=True
    )
    return SessionDetailOut(**fields, transcript=detail.transcript)


_position_encoder = msgspec.json.Encoder()
_position_decoder = msgspec.json.Decoder(tuple[int, str])


def encode_cursor(position: PagePosition) -> str:
    """The opaque `next` of a page that ended at `position`."""
    micros = (position.started_at - _EPOCH) // _MICROSECOND
    text = _position_encoder.encode((micros, position.id))
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> PagePosition:
    """The position `encode_cursor` made `cursor` of; `Refusal` (400) for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, session_id = _position_decoder.decode(text)
        return PagePosition(_EPOCH + micros * _MICROSECOND, session_id)
    except (binascii.Error, ValueError, OverflowError, msgspec.DecodeError):
        raise Refusal(400, "invalid_cursor", "this cursor was not handed out here") from None


def _not_found(session_id: str) -> Refusal:
    return Refusal(404, "not_found", f"no session {session_id!r}")


async def _visible(store: StoreHandle, request: Request, session_id: str) -> SessionDetail:
    """The session if the caller may see it; `SessionNotFound` otherwise, whichever it is."""
    detail = await store.get_session(session_id)
    tenant = Caller.of(request).tenant
    if tenant is not None and detail.session.client != tenant:
        raise SessionNotFound(session_id)
    return detail


async def list_sessions(store: StoreHandle, request: Request) -> Response:
    text = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE:  # not "²"
        raise Refusal(400, "invalid_limit", f"limit must be a whole number from 1 to {MAX_PAGE}")
    tenant = Caller.of(request).tenant
    cursor = request.query_params.get("next") or request.query_params.get("cursor")
    page = await store.list_sessions(
        client=request.query_params.get("client") if tenant is None else tenant,
        limit=int(text),
        after=None if cursor is None else decode_cursor(cursor),
    )
    following = None if page.next is None else encode_cursor(page.next)
    return _json(SessionPageOut([_session_out(s) for s in page.sessions], following))


async def one_session(store: StoreHandle, request: Request) -> Response:
    session_id: str = request.path_params["session_id"]
    try:
        detail = await _visible(store, request, session_id)
        if request.method == "DELETE":
            await store.delete_session(session_id)
            return Response(status_code=204)
        return _json(_detail_out(detail))
    except SessionNotFound:
        raise _not_found(session_id) from None
    except SessionLive:
        raise Refusal(409, "session_live", "the session has not ended yet") from None


async def session_audio(store: StoreHandle, request: Request) -> Response:
    session_id: str = request.path_params["session_id"]
    try:
        record = (await _visible(store, request, session_id)).session
    except SessionNotFound:
        raise _not_found(session_id) from None
    if not record.has_audio:
        raise Refusal(404, "no_audio", "this session was not recorded")
    if record.ended_at is None:
        raise Refusal(409, "session_live", "the recording is still being written")
    found = await store.recording_store.locate(session_id)
    if found is None:
        raise Refusal(404, "no_audio", "the recording is gone")
    if isinstance(found, Path):
        return FileResponse(
            found,
            media_type="audio/wav",
            filename=f"{session_id}.wav",
            content_disposition_type="inline",
        )
    return await stored_audio_response(
        store.recording_store, session_id, found, request.headers, request.method
    )


def _runtime_store(connection: HTTPConnection) -> StoreHandle:
    return Runtime.of(connection).store


def _answering_refusals(store_of: StoreLookup, endpoint: StoreEndpoint) -> Endpoint:
    """`endpoint` given the store, with refusals (and a closed store) answered."""

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        try:
            store = store_of(request)
            if store is None:
                raise Refusal(503, "store_unavailable", "sessions are not stored on this server")
            return await endpoint(store, request)
        except Refusal as refusal:
            return refusal.response()
        except StoreClosed:
            return Refusal(503, "store_closed", "the store is shutting down").response()
        except RecordingsUnreachable as error:
            log.error("recordings: %s", error)
            message = "the recordings' object store cannot be reached"
            return Refusal(503, "recordings_unavailable", message).response()
        # its database out of reach (a PostgreSQL outage); the next request reconnects
        except StoreError:
            return Refusal(503, "store_error", "the store's database cannot be reached").response()

    return answer


def sessions_routes(store_of: StoreLookup = _runtime_store) -> list[BaseRoute]:
    """The routes; `store_of` finds the store for a request (by default the app runtime's:
    503 `not_running` while the app's lifespan is not running)."""
    return [
        Route("/v1/sessions", _answering_refusals(store_of, list_sessions), methods=["GET"]),
        Route(
            "/v1/sessions/{session_id}",
            _answering_refusals(store_of, one_session),
            methods=["GET", "DELETE"],
        ),
        Route(
            "/v1/sessions/{session_id}/audio",
            _answering_refusals(store_of, session_audio),
            methods=["GET", "HEAD"],
        ),
    ]
