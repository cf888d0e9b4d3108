"""`GET /v1/sessions/{id}/events`: a session's finals as server-sent events, live.

Whoever may read the session (`GET /v1/sessions/{id}`'s tenant rules, `service/routes/sessions.py`:
another tenant's session is a 404) gets its stored finals first, then, while the session is live
on this server, each new final as the store takes it (`service/session/feeds.py`), without
duplicates, then an `end` event and the end of the stream. The follower joins the live feed
before it reads the stored finals, so none falls between the two. Events: `final` (data: the
utterance as `GET /v1/sessions/{id}` shows it, with its `channel` in a multichannel session),
`end` (`{"reason": "ended"}`, or `"dropped"` for a follower that fell `QUEUE_SIZE` finals behind:
it is dropped, never waited on), and a comment every `KEEPALIVE_S` while nothing happens.
A session takes at most `MAX_FOLLOWERS` followers at once (429 `too_many_followers`); a follower
leaves the feed as its response ends, however it ends (`EventStream`: a client that leaves during
the replay, or before the first event, holds no place).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import msgspec
import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from actors.store.actor import (
    SessionDetail,
    SessionNotFound,
    StoreClosed,
    StoreError,
    StoreHandle,
)
from actors.store.schema import StoredUtterance
from service.policy.caller import Caller
from service.policy.refusal import Refusal
from service.routes.sessions import UtteranceOut
from service.runtime import Runtime
from service.session.feeds import Following, TooManyFollowers

KEEPALIVE_S = 15.0
_encoder = msgspec.json.Encoder()


async def session_events(request: Request) -> Response:
    session_id: str = request.path_params["session_id"]
    try:
        runtime = Runtime.of(request)
        tenant = Caller.of(request).tenant
        await _visible(runtime.store, tenant, session_id)
        try:
            following = runtime.feeds.follow(session_id)
        except TooManyFollowers:
            raise Refusal(
                429, "too_many_followers", "this session has as many followers as it takes"
            ) from None
        try:  # read after joining the feed: no final falls between the two
            detail = await _visible(runtime.store, tenant, session_id)
        except BaseException:
            if following is not None:
                following.close()
            raise
    except Refusal as refusal:
        return refusal.response()
    except (StoreClosed, StoreError):
        return Refusal(503, "store_unavailable", "the store cannot be read now").response()
    return EventStream(detail, following)


class EventStream(StreamingResponse):
    """The events of one session; its follower leaves the feed when the response is done,
    however it ends: the client gone during the replay, or before the first event."""

    def __init__(self, detail: SessionDetail, following: Following | None) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(
            _stream(detail, following), media_type="text/event-stream", headers=headers
        )
        self.following = following

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.following is not None:
                self.following.close()


async def _visible(store: StoreHandle, tenant: str | None, session_id: str) -> SessionDetail:
    try:
        detail = await store.get_session(session_id)
    except SessionNotFound:
        raise Refusal(404, "not_found", f"no session {session_id!r}") from None
    if tenant is not None and detail.session.client != tenant:
        raise Refusal(404, "not_found", f"no session {session_id!r}")
    return detail


async def _stream(detail: SessionDetail, following: Following | None) -> AsyncGenerator[str, None]:
    try:
        sent: set[int] = set()
        for utterance in detail.utterances:
            sent.add(utterance.index)
            yield _final(utterance)
        if following is None:  # ended (or live on another replica): what is stored is all
            yield _event("end", {"reason": "ended"})
            return
        while True:
            with trio.move_on_after(KEEPALIVE_S) as waiting:
                try:
                    utterance = await following.receive.receive()
                except trio.EndOfChannel:
                    break
            if waiting.cancelled_caught:
                yield ": keepalive\n\n"
            elif utterance.index not in sent:
                sent.add(utterance.index)
                yield _final(utterance)
        yield _event("end", {"reason": "dropped" if following.dropped else "ended"})
    finally:  # the follower leaves the feed however the stream ends (the replay too)
        if following is not None:
            following.close()


def _final(utterance: StoredUtterance) -> str:
    return _event("final", msgspec.convert(utterance, UtteranceOut, from_attributes=True))


def _event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {_encoder.encode(data).decode()}\n\n"


def events_routes() -> list[BaseRoute]:
    return [Route("/v1/sessions/{session_id}/events", session_events, methods=["GET"])]
