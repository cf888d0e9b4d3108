"""trio-websocket as Chorus's clients use it (`service/websocket_client.py`), against a real
hypercorn server configured as `chorus serve` (it pings every 2 s, the first at once)."""

from __future__ import annotations

from conftest import serve_app
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
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
