"""`WS /v1/stream`: the native protocol route (DESIGN §4.1).

The route owns the connection: it reads the query into a `Config`, accepts, and runs one
session (`service.session.run_session`) with a `NativeCodec`. Errors inside the session's
nursery close the socket with 1011 and are logged; the server goes on.
"""

from __future__ import annotations

import logging

import msgspec
from starlette.websockets import WebSocket

from protocol.native import Config, Error, NativeCodec, config_from_query
from service.session import check_config, run_session
from service.sockets import StarletteSocket

log = logging.getLogger("chorus.stream")


async def stream_endpoint(websocket: WebSocket) -> None:
    await serve_native(websocket, route="/v1/stream")


async def serve_native(websocket: WebSocket, *, route: str) -> None:
    state = websocket.app.state
    codec = NativeCodec()
    socket = StarletteSocket(websocket)
    await websocket.accept()
    try:
        config = config_from_query(dict(websocket.query_params))
    except msgspec.ValidationError as error:
        await _refuse(socket, codec, Error(code="invalid_config", message=str(error), fatal=True))
        return
    problem = check_config(config, state.options)
    if problem is not None:
        problem.fatal = True
        await _refuse(socket, codec, problem)
        return
    await _serve(websocket, socket, codec, config, route)


async def _serve(
    websocket: WebSocket, socket: StarletteSocket, codec: NativeCodec, config: Config, route: str
) -> None:
    state = websocket.app.state
    state.sessions += 1
    try:
        await run_session(socket, codec, state.transcriber, config, state.options, route=route)
    except Exception:
        log.exception("session failed")
        await socket.close(1011, "internal error")
    finally:
        state.sessions -= 1


async def _refuse(socket: StarletteSocket, codec: NativeCodec, error: Error) -> None:
    for message in codec.encode(error):
        await socket.send(message)
    await socket.close(1008, error.code)
