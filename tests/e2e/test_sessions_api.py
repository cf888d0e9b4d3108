"""`/v1/sessions` over a real store (SQLite, and PostgreSQL on loopback), served by hypercorn on
127.0.0.1:0, read with httpx."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send
from support.postgres_server import PostgresServer

from actors.store.actor import SessionRecord, StoredUtterance, StoredWord, StoreHandle, open_store
from service.policy.caller import Caller
from service.routes.sessions import sessions_routes

ADMIN = Caller(client="key:admin", sees_all=True, anonymous=False)


def as_caller(app: ASGIApp, caller: Caller | None) -> ASGIApp:
    """`app` with every connection admitted as `caller` (None: no caller at all), as
    `SecurityMiddleware` would admit it in front of the routes."""

    async def admitted(scope: Scope, receive: Receive, send: Send) -> None:
        if caller is not None and scope["type"] in ("http", "websocket"):
            caller.admit(scope)
        await app(scope, receive, send)

    return admitted


@asynccontextmanager
async def serving(
    store: StoreHandle | None, caller: Caller | None = ADMIN
) -> AsyncIterator[httpx.AsyncClient]:
    app = as_caller(Starlette(routes=sessions_routes(lambda request: store)), caller)
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 0.1
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=binds[0]) as client:
            yield client
        stop.set()


async def add_session(
    store: StoreHandle, session_id: str, client: str, *, audio: bytes | None = None
) -> None:
    await store.begin_session(
        SessionRecord(
            id=session_id, route="/v1/listen", client=client, model="tiny.en", language="en"
        )
    )
    words = (StoredWord("hello", 0.5, 0.9, 0.75),)
    await store.add_utterance(session_id, StoredUtterance(0, 0.5, 1.5, "Hello.", "en", 0.9, words))
    await store.add_utterance(session_id, StoredUtterance(1, 2.0, 3.0, " World", "en", 0.8))
    if audio is not None:
        async with await store.open_recording(session_id, 16000) as recording:
            await recording.append(audio)
    await store.end_session(session_id, "stop", 3.25)


async def test_list_and_read_sessions(tmp_path: Path, store_database_url: str | None) -> None:
    async with (
        open_store(tmp_path, database_url=store_database_url) as store,
        serving(store) as client,
    ):
        assert (await client.get("/v1/sessions")).json() == {"sessions": [], "next": None}
        for number in range(5):
            await add_session(store, f"s{number}", f"key:{number % 2}")
        first = (await client.get("/v1/sessions", params={"limit": 2})).json()
        assert [s["id"] for s in first["sessions"]] == ["s4", "s3"]
        listed = first["sessions"][0]
        assert set(listed) == {
            "id",
            "route",
            "client",
            "model",
            "language",
            "started_at",
            "ended_at",
            "end_reason",
            "duration_s",
            "utterances",
            "has_audio",
        }
        assert (listed["client"], listed["utterances"], listed["has_audio"]) == ("key:0", 2, False)
        assert (listed["end_reason"], listed["duration_s"]) == ("stop", 3.25)
        assert datetime.fromisoformat(listed["ended_at"]) >= datetime.fromisoformat(
            listed["started_at"]
        )
        rest = (await client.get("/v1/sessions", params={"limit": 2, "next": first["next"]})).json()
        last = (await client.get("/v1/sessions", params={"limit": 2, "next": rest["next"]})).json()
        assert [s["id"] for s in rest["sessions"] + last["sessions"]] == ["s2", "s1", "s0"]
        assert last["next"] is None
        mine = (await client.get("/v1/sessions", params={"client": "key:1"})).json()
        assert [s["id"] for s in mine["sessions"]] == ["s3", "s1"]
        for params in ({"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"next": "nope"}):
            bad = await client.get("/v1/sessions", params=params)
            assert bad.status_code == 400 and "error" in bad.json()

        one = (await client.get("/v1/sessions/s3")).json()
        assert one["transcript"] == "Hello. World"
        assert one["utterances"] == [
            {
                "index": 0,
                "start": 0.5,
                "end": 1.5,
                "text": "Hello.",
                "language": "en",
                "confidence": 0.9,
                "words": [{"word": "hello", "start": 0.5, "end": 0.9, "confidence": 0.75}],
            },
            {
                "index": 1,
                "start": 2.0,
                "end": 3.0,
                "text": " World",
                "language": "en",
                "confidence": 0.8,
                "words": None,
            },
        ]
        assert (one["id"], one["route"], one["model"]) == ("s3", "/v1/listen", "tiny.en")
        missing = await client.get("/v1/sessions/nope")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


async def test_audio_with_ranges_and_delete(tmp_path: Path, store_database_url: str | None) -> None:
    audio = bytes(range(256)) * 125  # 32000 bytes: one second
    async with (
        open_store(tmp_path, database_url=store_database_url) as store,
        serving(store) as client,
    ):
        await add_session(store, "rec", "ip:1.2.3.4", audio=audio)
        await add_session(store, "plain", "ip:1.2.3.4")
        whole = await client.get("/v1/sessions/rec/audio")
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "audio/wav"
        assert whole.headers["accept-ranges"] == "bytes"
        with wave.open(io.BytesIO(whole.content)) as reader:
            assert (reader.getframerate(), reader.getnframes()) == (16000, 16000)
            assert reader.readframes(16000) == audio
        part = await client.get("/v1/sessions/rec/audio", headers={"Range": "bytes=44-47"})
        assert (part.status_code, part.content) == (206, audio[:4])
        assert part.headers["content-range"] == f"bytes 44-47/{44 + len(audio)}"
        beyond = await client.get("/v1/sessions/rec/audio", headers={"Range": "bytes=99999-"})
        assert beyond.status_code == 416
        assert (await client.get("/v1/sessions/plain/audio")).status_code == 404
        assert (await client.get("/v1/sessions/nope/audio")).status_code == 404

        await store.begin_session(
            SessionRecord(id="live", route="/v1/stream", client="c", model="m", language="en")
        )
        recording = await store.open_recording("live", 16000)
        await recording.append(audio)
        assert (await client.get("/v1/sessions/live/audio")).status_code == 409
        live = await client.delete("/v1/sessions/live")
        assert (live.status_code, live.json()["error"]["code"]) == (409, "session_live")
        await recording.aclose()

        assert (await client.delete("/v1/sessions/rec")).status_code == 204
        assert not store.audio_path("rec").exists()
        assert (await client.get("/v1/sessions/rec")).status_code == 404
        assert (await client.delete("/v1/sessions/rec")).status_code == 404
        listed = (await client.get("/v1/sessions")).json()["sessions"]
        assert [s["id"] for s in listed] == ["live", "plain"]


async def test_without_a_store_the_routes_say_so() -> None:
    async with serving(None) as client:
        answer = await client.get("/v1/sessions")
        assert (answer.status_code, answer.json()["error"]["code"]) == (503, "store_unavailable")


async def test_a_database_out_of_reach_is_a_503_until_it_is_back(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()
    async with open_store(tmp_path, database_url=url) as store, serving(store) as client:
        await add_session(store, "s1", "key:a")
        postgres_server.stop()
        try:
            for path in ("/v1/sessions", "/v1/sessions/s1"):
                answer = await client.get(path)
                assert (answer.status_code, answer.json()["error"]["code"]) == (503, "store_error")
        finally:
            postgres_server.start()
        assert (await client.get("/v1/sessions/s1")).json()["id"] == "s1"


async def test_a_connection_without_a_caller_sees_only_the_anonymous_sessions(
    tmp_path: Path, store_database_url: str | None
) -> None:
    """Routes served without `SecurityMiddleware` treat the caller as the least privileged
    one (`Caller.NOBODY`): not every tenant's sessions."""
    async with (
        open_store(tmp_path, database_url=store_database_url) as store,
        serving(store, caller=None) as client,
    ):
        await add_session(store, "theirs", "key:other")
        await add_session(store, "mine", "anonymous")
        listed = (await client.get("/v1/sessions", params={"client": "key:other"})).json()
        assert [s["id"] for s in listed["sessions"]] == ["mine"]
        assert (await client.get("/v1/sessions/theirs")).status_code == 404
