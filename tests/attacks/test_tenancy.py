"""What one tenant can learn of another, and where keys travel (issue 21, findings 9 and 10):
each checked against the real app served by hypercorn, with httpx and trio-websocket clients."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import serve_app
from starlette.applications import Starlette
from support.fakes import FakeModel
from support.ws_client import connect, rejected
from trio_websocket import open_websocket_url

from actors.store.actor import SessionRecord
from service.app import create_app
from service.config import Settings
from service.policy.tickets import MAX_TICKETS_PER_CLIENT, TICKET_TTL_S, TicketBook
from service.runtime import runtime, setup

KEYS = {"CHORUS_API_KEYS": "alice:key-a,bob:key-b", "CHORUS_ADMIN_KEYS": "ops:key-ops"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@asynccontextmanager
async def keyed_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Starlette, str, httpx.AsyncClient]]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    app = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    async with serve_app(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        yield app, address, http


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def position(cursor: str) -> object:
    """What a cursor says, read as this server writes it (base64url of JSON)."""
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


async def test_a_tenant_cannot_count_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 9: the list's cursor holds no global counter (bob's sessions between alice's
    showed as gaps in it), and `/health` and `/metrics` give no figures without an admin key."""
    async with keyed_server(tmp_path, monkeypatch) as (app, _, http):
        store = runtime(app).store
        start = datetime(2025, 5, 1, 9, tzinfo=UTC)
        owners = ["alice", "bob", "bob", "bob", "alice", "bob", "alice"]
        for number, owner in enumerate(owners):
            await store.begin_session(
                SessionRecord(
                    id=f"s{number}",
                    route="/v1/stream",
                    client=f"key:{owner}",
                    model="fake",
                    language="en",
                    started_at=start + timedelta(minutes=number),
                )
            )
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "1"} | ({"next": cursor} if cursor else {})
            page = await http.get("/v1/sessions", params=params, headers=as_key("key-a"))
            assert page.status_code == 200, page.text
            (shown,) = page.json()["sessions"]
            seen.append(shown["id"])
            cursor = page.json()["next"]
            if cursor is None:
                break
            # the cursor is the position of the session just shown, and nothing else
            micros = (datetime.fromisoformat(shown["started_at"]) - EPOCH) // timedelta(
                microseconds=1
            )
            assert position(cursor) == [micros, shown["id"]]
        assert seen == ["s6", "s4", "s0"]
        # the old cursor was the store's sequence number: such a guess is refused, not followed
        for forged in ("3", "9223372036854775807", "e30", "WzEsMl0"):
            refused = await http.get(
                "/v1/sessions", params={"next": forged}, headers=as_key("key-a")
            )
            assert (
                refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_cursor"
            )

        # /health: a bare status without a key, no counts for a tenant, everything for ops
        assert (await http.get("/health")).json() == {"status": "ok"}
        assert (await http.get("/health", headers=as_key("wrong"))).json() == {"status": "ok"}
        tenant = (await http.get("/health", headers=as_key("key-a"))).json()
        assert tenant["status"] == "ok" and tenant["model"] == "fake"
        assert not {"sessions", "active_connections", "transcriber", "capacity"} & set(tenant)
        admin = (await http.get("/health", headers=as_key("key-ops"))).json()
        assert admin["sessions"] == 0 and "transcriber" in admin

        # /metrics: an admin key's only
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers=as_key("key-b"))).status_code == 403
        scraped = await http.get("/metrics", headers=as_key("key-ops"))
        assert scraped.status_code == 200 and "chorus_sessions_active 0" in scraped.text


async def test_keys_stay_out_of_urls_and_tickets_open_websockets_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 10: HTTP routes take the key from a header only, and a browser opens a
    WebSocket with a single-use, short-lived ticket bought with the key."""
    async with keyed_server(tmp_path, monkeypatch) as (app, address, http):
        # the key in the URL of an HTTP route is no key at all
        in_url = await http.get("/v1/sessions", params={"token": "key-a"})
        assert in_url.status_code == 401
        assert (await http.get("/v1/sessions", headers=as_key("key-a"))).status_code == 200
        assert (await http.post("/v1/tickets", params={"token": "key-a"})).status_code == 401

        async def ticket(key: str = "key-a") -> str:
            answer = await http.post("/v1/tickets", headers=as_key(key))
            assert answer.status_code == 201, answer.text
            assert answer.json()["expires_in"] == 60
            assert answer.headers["cache-control"] == "no-store"
            token: str = answer.json()["ticket"]
            return token

        stream = f"ws://{address}/v1/stream"
        first = await ticket()
        async with connect(f"{stream}?ticket={first}") as ws:
            ready = json.loads(await ws.get_message())
        assert ready["type"] == "ready"
        detail = await http.get(f"/v1/sessions/{ready['session_id']}", headers=as_key("key-a"))
        assert detail.json()["client"] == "key:alice"  # the ticket's session is alice's

        # used twice: refused, as a wrong key is
        again = await rejected(f"{stream}?ticket={first}")
        assert again.status_code == 401
        assert json.loads(again.body or b"")["error"]["message"] == "invalid API key"

        # where a key may go, a ticket may go: the `token` subprotocol (Deepgram's browser SDK)
        async with open_websocket_url(stream, subprotocols=["token", await ticket()]) as ws:
            assert ws.subprotocol == "token"
            assert json.loads(await ws.get_message())["type"] == "ready"
            await ws.aclose()
            await ws._stream.aclose()

        # expired: refused alike
        late = await ticket()
        book = setup(app).tickets
        book.clock = lambda: time.monotonic() + 61
        assert (await rejected(f"{stream}?ticket={late}")).status_code == 401
        assert len(book) == 0  # nothing kept of a ticket once tried

        # an HTTP route takes no ticket, and a keyless caller gets none
        book.clock = time.monotonic
        assert (
            await http.get("/v1/sessions", params={"ticket": await ticket()})
        ).status_code == 401
        assert (await http.post("/v1/tickets")).status_code == 401


def test_a_key_holds_a_bounded_number_of_tickets() -> None:
    now = [0.0]
    book = TicketBook(clock=lambda: now[0])
    tickets = [book.issue("key:alice").ticket for _ in range(MAX_TICKETS_PER_CLIENT + 4)]
    bob = book.issue("key:bob").ticket
    assert len(book) == MAX_TICKETS_PER_CLIENT + 1  # alice's oldest 4 were forgotten
    assert [book.redeem(t) for t in tickets[:4]] == [None] * 4
    assert book.redeem(tickets[4]) == "key:alice" and book.redeem(tickets[4]) is None
    assert book.redeem("not-a-ticket") is None
    now[0] = TICKET_TTL_S
    assert book.redeem(bob) is None  # expired at 60 s
    book.issue("key:alice")  # issuing forgets what has expired
    assert len(book) == 1
