"""A connection whose protocol layer fails ends alone; the server keeps serving the others
(`service.connection_guard`), through a real hypercorn server configured as `chorus serve`."""

from __future__ import annotations

import pytest
import trio
from conftest import serve_app
from hypercorn.protocol.h11 import H11Protocol
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def _exchange(where: str, request: bytes) -> bytes:
    host, port = where.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    answer = b""
    try:
        await stream.send_all(request)
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                answer += chunk
    except trio.BrokenResourceError:
        pass  # reset by a server that dropped the connection
    finally:
        await stream.aclose()
    return answer


async def test_a_protocol_error_in_one_connection_leaves_the_server_serving(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """hypercorn answers a malformed request with an error response; when that send meets a
    close in progress (the race the soak's slow-body attack provoked), trio raises
    BusyResourceError out of the connection's `run`, which stopped the whole server. Here the
    send always fails so: the bad connection ends, logged, and the next request is answered."""

    async def busy(self: H11Protocol, status_code: int) -> None:
        raise trio.BusyResourceError("another task is currently sending data on this SocketStream")

    monkeypatch.setattr(H11Protocol, "_send_error_response", busy)
    app = Starlette(routes=[Route("/", _hello)])
    async with serve_app(app) as where:
        assert await _exchange(where, b"NOT HTTP AT ALL\r\n\r\n") == b""
        for _ in range(2):  # and again: the guard is not used up
            get = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            answer = await _exchange(where, get)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
            assert await _exchange(where, b"\x00garbage\r\n\r\n") == b""
    assert "error in hypercorn's protocol layer" in caplog.text
