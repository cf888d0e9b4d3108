"""A small native-protocol client for end-to-end tests (trio-websocket), and `rejected()`, a
raw HTTP/1.1 upgrade request (h11) for handshakes the server must refuse."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import h11
import trio
from support.audio_files import pcm16
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)

from actors.model.port import Samples


async def send_audio(
    ws: WebSocketConnection, audio: Samples, *, chunk_s: float = 0.1, pace: float = 0.0
) -> None:
    """Send PCM16 in `chunk_s` frames; `pace` > 0 sleeps `chunk_s / pace` between frames."""
    data = pcm16(audio)
    step = int(chunk_s * 16000) * 2
    for offset in range(0, len(data), step):
        await ws.send_message(data[offset : offset + step])
        if pace:
            await trio.sleep(chunk_s / pace)


async def send_json(ws: WebSocketConnection, payload: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(payload))


async def receive_all(ws: WebSocketConnection) -> list[dict[str, Any]]:
    frames = []
    try:
        while True:
            message = await ws.get_message()
            frames.append(json.loads(message) | {"_at": trio.current_time()})
    except ConnectionClosed:
        return frames


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[WebSocketConnection]:
    """`open_websocket_url`, plus closing the TCP stream it can leave open.

    trio-websocket's client waits for the server's TCP close after the close handshake; if the
    block ends first, its reader task is cancelled and the socket is never closed (a
    ResourceWarning, an error under our warnings policy).
    """
    async with open_websocket_url(url) as ws:
        try:
            yield ws
        finally:
            stream = ws._stream
    await stream.aclose()


@asynccontextmanager
async def connect_from(
    source: str, host: str, port: int, resource: str, headers: list[tuple[str, str]] | None = None
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to `host:port` from the local address `source` (e.g. 127.0.0.3: another
    client on loopback than the test's own 127.0.0.1)."""
    stream = await trio.open_tcp_stream(host, port, local_address=source)
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(
            nursery, stream, f"{host}:{port}", resource, extra_headers=encoded_headers(headers)
        )
        try:
            yield ws
        finally:
            await ws.aclose()


async def drop(ws: WebSocketConnection) -> None:
    """Close the TCP connection under `ws` without waiting for the server to close it (what a
    browser does when the server's TCP close does not come after the close handshake)."""
    await ws._stream.aclose()


def encoded_headers(headers: list[tuple[str, str]] | None) -> list[tuple[bytes, bytes]]:
    """Headers as trio-websocket types them (wsproto would take text too)."""
    return [(name.encode(), value.encode()) for name, value in headers or []]


@attrs.frozen
class Rejection:
    """A WebSocket handshake the server answered with an HTTP response instead of `101`."""

    status_code: int
    headers: tuple[tuple[bytes, bytes], ...]  # names in lower case, as h11 gives them
    body: bytes


async def rejected(
    url: str, headers: list[tuple[str, str]] | None = None, *, host: str | None = None
) -> Rejection:
    """Ask for a WebSocket upgrade that the server must refuse; return its refusal.

    A raw HTTP/1.1 upgrade request (h11) over a TCP stream this function opens and closes, so
    what is checked is the server's answer, not a client library's handling of it."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ValueError(f"not a ws:// URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    upgrade = [
        ("Host", host or parts.netloc),  # `host`: another Host than the URL's
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    client = h11.Connection(h11.CLIENT)
    async with await trio.open_tcp_stream(parts.hostname, parts.port or 80) as stream:
        request = h11.Request(method="GET", target=target, headers=[*upgrade, *(headers or [])])
        await stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
        return await _read_refusal(stream, client, url)


async def _read_refusal(stream: trio.SocketStream, client: h11.Connection, url: str) -> Rejection:
    """The response to the upgrade request, which must not be `101 Switching Protocols`."""
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await stream.receive_some())
        elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            raise AssertionError(f"{url} was accepted")
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and response is not None:
            headers = tuple((bytes(name), bytes(value)) for name, value in response.headers)
            return Rejection(response.status_code, headers, bytes(body))
        elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            raise AssertionError(f"{url}: the server closed the connection without an answer")
