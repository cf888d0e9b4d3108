"""Starlette's WebSocket behind the pipeline's `FrameSocket` protocol.

The route owns the Starlette `WebSocket`; this adapter translates its disconnect signals into
`ClientGone` at the boundary, so the stages never see Starlette.

`wait_gone` returns once the server knows the client has gone without reading what it sent:
under hypercorn with `service.serving` installed, the `GONE` scope extension; elsewhere never
(the client's close is then seen only when the reader reaches it).

`drain` is the route's last step: hypercorn hands client messages to the app through a small
bounded queue and, once the app returns, puts a final `websocket.disconnect` into it; if the
session stopped reading with that queue full (a drain on shutdown, a fatal error, a client that
kept sending after `stop`), that put would block the connection forever. So the route reads
and discards what is left until the client's close (or a short timeout).
"""

from __future__ import annotations

import trio
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from service.serving import GONE
from service.session.ports import ClientGone

# What a send to a client that has vanished raises, through Starlette and hypercorn: a TCP
# connection dropped without a close frame makes hypercorn's own close handshake race ours
# (`BusyResourceError`, seen 34 times in 100 abrupt disconnects by `bench.soak`).
_GONE = (
    WebSocketDisconnect,
    RuntimeError,
    OSError,
    trio.BrokenResourceError,
    trio.BusyResourceError,
    trio.ClosedResourceError,
)


class StarletteSocket:
    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def receive(self) -> str | bytes:
        try:
            message = await self._websocket.receive()
        except WebSocketDisconnect as error:
            raise ClientGone(str(error), error.code) from None
        except RuntimeError as error:
            raise ClientGone(str(error)) from None
        if message["type"] == "websocket.disconnect":
            code = message.get("code", 1005)
            raise ClientGone(f"client closed ({code})", code)
        if message.get("bytes") is not None:
            return bytes(message["bytes"])
        return str(message.get("text") or "")

    async def send(self, message: str | bytes) -> None:
        if self._websocket.application_state != WebSocketState.CONNECTED:
            raise ClientGone("socket already closed")
        try:
            if isinstance(message, bytes):
                await self._websocket.send_bytes(message)
            else:
                await self._websocket.send_text(message)
        except _GONE as error:
            raise ClientGone(str(error)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._websocket.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await self._websocket.close(code, reason)
        except _GONE as error:
            raise ClientGone(str(error)) from None

    async def wait_gone(self) -> None:
        gone = self._websocket.scope.get("extensions", {}).get(GONE)
        if isinstance(gone, trio.Event):
            await gone.wait()
        else:
            await trio.sleep_forever()

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Read and discard client messages until the client has closed (or `timeout_s`)."""
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    await self.receive()
                except ClientGone:
                    return
