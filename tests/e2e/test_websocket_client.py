"""trio-websocket as Chorus's clients use it (`service/websocket_client.py`), against a real
hypercorn server configured as `chorus serve` (it pings every 2 s, the first at once); and the
tests' own raw upgrade request, `support.ws_client.rejected`."""

from __future__ import annotations

import pytest
from conftest import serve_app
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from support.ws_client import rejected
from trio_websocket import open_websocket_url


async def _hold(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.receive_bytes()
    except (WebSocketDisconnect, KeyError, RuntimeError):
        pass


async def test_a_client_that_closes_as_a_ping_arrives_carries_on() -> None:
    """The server's first ping comes as the client closes: trio-websocket answered it in the
    closing state, wsproto refused, and a stray Cancelled ended the caller's code after the
    connection without a word (the last line here never ran, and the test passed)."""
    app = Starlette(routes=[WebSocketRoute("/hold", _hold)])
    carried_on = 0
    async with serve_app(app) as where:
        for _ in range(5):
            async with open_websocket_url(f"ws://{where}/hold"):
                pass
            carried_on += 1
    assert carried_on == 5


async def _refuse_if_asked(websocket: WebSocket) -> None:
    if websocket.headers.get("x-refuse") == "yes":
        refusal = PlainTextResponse("go away", status_code=403, headers={"X-Why": "asked"})
        await websocket.send_denial_response(refusal)
        return
    await _hold(websocket)


async def test_rejected_reads_a_refusal_and_fails_on_an_upgrade() -> None:
    app = Starlette(routes=[WebSocketRoute("/maybe", _refuse_if_asked)])
    async with serve_app(app) as where:
        refusal = await rejected(f"ws://{where}/maybe?x=1", [("X-Refuse", "yes")])
        with pytest.raises(AssertionError, match="was accepted"):
            await rejected(f"ws://{where}/maybe")
    assert (refusal.status_code, refusal.body) == (403, b"go away")
    assert (b"x-why", b"asked") in refusal.headers
