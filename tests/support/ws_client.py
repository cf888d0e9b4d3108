"""A small native-protocol client for end-to-end tests (trio-websocket)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from support.audio_files import pcm16
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
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


async def rejected(url: str, headers: list[tuple[str, str]] | None = None) -> ConnectionRejected:
    """Open a WebSocket that the server must refuse before the upgrade; return the refusal.

    trio-websocket 0.12 leaves its TCP stream open when a handshake is rejected, so the
    streams opened meanwhile are closed here.
    """
    streams: list[trio.SocketStream] = []
    original = trio.open_tcp_stream

    async def tracked(host: str, port: int) -> trio.SocketStream:
        stream = await original(host, port)
        streams.append(stream)
        return stream

    trio.open_tcp_stream = tracked  # type: ignore[assignment]
    try:
        async with open_websocket_url(url, extra_headers=encoded_headers(headers)):
            pass
    except ConnectionRejected as refusal:
        return refusal
    finally:
        trio.open_tcp_stream = original
        for stream in streams:
            await stream.aclose()
    raise AssertionError(f"{url} was accepted")
