"""Starlette's WebSocket behind the pipeline's `FrameSocket` protocol.

The route owns the Starlette `WebSocket`; this adapter translates its disconnect signals into
`ClientGone` at the boundary, so the stages never see Starlette.
"""

from __future__ import annotations

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from service.pipeline import ClientGone


class StarletteSocket:
    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def receive(self) -> str | bytes:
        try:
            message = await self._websocket.receive()
        except (WebSocketDisconnect, RuntimeError) as error:
            raise ClientGone(str(error)) from None
        if message["type"] == "websocket.disconnect":
            raise ClientGone(f"client closed ({message.get('code', 1005)})")
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
        except (WebSocketDisconnect, RuntimeError, OSError) as error:
            raise ClientGone(str(error)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._websocket.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await self._websocket.close(code, reason)
        except (WebSocketDisconnect, RuntimeError, OSError) as error:
            raise ClientGone(str(error)) from None
