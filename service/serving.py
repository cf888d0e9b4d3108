"""hypercorn's WebSocket streams, bounded: what one connection may hold before the app reads it.

hypercorn 0.18 (`hypercorn/protocol/ws_stream.py`) buffers each whole message before the app
sees it, and three things there are unbounded or too loose for a public server (issue 21):
it always accepts permessage-deflate and wsproto inflates each received chunk without a bound
(25 MiB of zeros is 25 KB on the wire); its buffer counts characters of text messages, so its
limit lets a `str` of four times as many bytes through; and it has one limit for every path,
the largest any route takes (`WS /ws`'s recordings). It then queues `max_app_queue_size`
messages per connection and, with that queue full, stops reading the socket: a client that
leaves while its session is paced is not seen until the session has read everything queued.

`install()`, called once by each server entry point (`chorus serve`, `service.asgi`), puts
`BoundedWSStream` where hypercorn's HTTP/1.1 and HTTP/2 protocols make their WebSocket streams
(their module-level `WSStream` names), and `service.connection_guard.guard()` keeps one
connection's protocol error from stopping the server; nothing else of hypercorn changes. The
stream:

* declines permessage-deflate (no `sec-websocket-extensions` in the 101): what a client sends
  is what the server holds, and a compressed frame is a protocol error (1002);
* buffers messages in bytes (UTF-8 for text) up to `WebSocketBounds.message_bytes(path)`, the
  route's own limit plus room for its friendly refusal (a route whose messages are small has
  its own: `SMALL_PATHS`, `WS /v1/twilio` 16 KiB), and refuses text over
  `wide_text_bytes` that is not ASCII (only base64 audio is that long, and a `str` with one
  non-ASCII character costs up to 4 bytes a character); over either, hypercorn closes with 1009;
* once the client has gone (its close, a reset seen by a write, a 1009) or the app has
  returned, drops what hypercorn would still queue, and the app's `receive` answers
  `websocket.disconnect` at once instead of after the queued messages; the server's pings
  (`websocket_ping_interval`) are the writes that find a client gone while nothing is read;
* tells the app, through the scope extension `GONE` (a `trio.Event`), that the client has
  gone, so a session whose reader is held by its pacer ends (`StarletteSocket.wait_gone`).

Memory per connection, before the app takes a message, with `L = message_bytes(path)` and
`q = WS_QUEUE` (1, this stream's own queue; hypercorn's `max_app_queue_size` stays at its
default for HTTP streams, whose queue must hold a request and its `http.disconnect` for a
handler that reads neither): `q` messages queued, one more waiting to be queued or one being
buffered (while hypercorn waits to queue one, it reads nothing, so these two are never both
full), the text of the last once more while it is decoded to a `str`, and hypercorn's 64 KiB
read: at most `(q + 2) × L + 64 KiB`, 3.3 MiB on the streaming routes (L = 1 MiB + 64 KiB) and
75 MiB on `WS /ws` (L = 25 MiB + 64 KiB) at the defaults; then the app's own (the session's bound is
`service.session.supervisor.memory_bound`). The figures the tests measured are in
`docs/security.md`.

hypercorn's internals change between versions: `install()` checks the names it relies on and
`tests/attacks/test_attacks_ws.py` checks the behaviour through a real server, so an upgrade that
undoes this fails there. Chorus mounted as an ASGI sub-app under someone else's server gets
none of this: that server's own message limits, compression and queue apply, and a paced
session notices a client that left only when it reads the close (`StarletteSocket.wait_gone`
never returns there).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs, unquote

import attrs
import trio
from hypercorn.protocol import h2, h11, ws_stream
from hypercorn.protocol.events import Event, Request, StreamClosed
from wsproto.events import Message, TextMessage

from service.connection_guard import guard

WS_QUEUE = 1  # WebSocket messages queued per connection before the app reads them
GONE = "chorus.websocket.gone"  # scope["extensions"][GONE]: a trio.Event, set when it has gone
CONFIG_NAME = "chorus_websocket_bounds"  # the hypercorn config attribute `install()` reads
# `WS /v1/twilio`: Twilio's messages are under 1 KiB of JSON and a 20 ms chunk's base64
SMALL_PATHS = (("/v1/twilio", 16 << 10),)


@attrs.frozen
class WebSocketBounds:
    """The largest message, in bytes after any decoding, each WebSocket path may send."""

    stream_bytes: int  # every route but the recordings route: a frame or a JSON message
    recordings_bytes: int  # `WS /ws`: one whole recording (base64 text or binary)
    wide_text_bytes: int  # text longer than this must be ASCII
    recordings_path: str = "/ws"
    small_paths: tuple[tuple[str, int], ...] = SMALL_PATHS  # routes whose messages are small

    def message_bytes(self, path: str, query: str = "") -> int:
        """`path`'s limit; `/ws?stream=true` is that route's live stream, not recordings."""
        small = dict(self.small_paths).get(path)
        if small is not None:
            return small
        streamed = parse_qs(query).get("stream", [""])[-1].lower() in ("true", "1", "yes")
        recordings = path == self.recordings_path and not streamed
        return self.recordings_bytes if recordings else self.stream_bytes


class ByteBuffer(ws_stream.WebsocketBuffer):
    """hypercorn's message buffer, counting bytes (its own counts characters of text)."""

    def __init__(self, max_bytes: int, wide_text_bytes: int) -> None:
        super().__init__(max_bytes)
        self.wide_text_bytes = wide_text_bytes
        self.overflowed = False
        self._bytes = BytesIO()
        self._text: bool | None = None
        self._ascii = True

    def extend(self, event: Message) -> None:  # type: ignore[type-arg]
        if self._text is None:
            self._text = isinstance(event, TextMessage)
        chunk = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
        self.length += self._bytes.write(chunk)
        self._ascii = self._ascii and chunk.isascii()
        wide = self._text and not self._ascii and self.length > self.wide_text_bytes
        if self.length > self.max_length or wide:
            self.clear()
            self.overflowed = True
            raise ws_stream.FrameTooLargeError()

    def clear(self) -> None:
        self._bytes, self._text, self._ascii, self.length = BytesIO(), None, True, 0

    def to_message(self) -> dict[str, Any]:
        data = self._bytes.getvalue()  # shares the buffer's bytes, no copy
        self._bytes = BytesIO()
        text = data.decode() if self._text else None
        return {"type": "websocket.receive", "bytes": None if self._text else data, "text": text}


class BoundedWSStream(ws_stream.WSStream):
    """hypercorn's `WSStream` with the bounds above (see the module docstring)."""

    def __init__(self, app: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        # this stream's own queue of WS_QUEUE messages; HTTP streams keep the config's, which
        # must hold a request and its `http.disconnect` for an app that never reads either
        # (hypercorn never closes the queue: a put into a full one blocks the connection)
        config = copy.copy(config)
        config.max_app_queue_size = WS_QUEUE
        super().__init__(_Watched(app, self), config, *args, **kwargs)
        size = config.websocket_max_message_size  # a config made without Chorus's settings
        self.bounds: WebSocketBounds = getattr(config, CONFIG_NAME, None) or WebSocketBounds(
            stream_bytes=size, recordings_bytes=size, wide_text_bytes=size
        )
        self.gone = trio.Event()
        self.gone_code = 1006
        self.receiving: trio.CancelScope | None = None  # the app's receive, while it waits
        self._putting: trio.CancelScope | None = None  # hypercorn's put, while it waits
        self._put: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    @property
    def app_put(self) -> Callable[[dict[str, Any]], Awaitable[None]] | None:
        return None if self._put is None else self._put_unless_gone

    @app_put.setter
    def app_put(self, put: Callable[[dict[str, Any]], Awaitable[None]] | None) -> None:
        self._put = put

    async def handle(self, event: Event) -> None:
        if isinstance(event, Request):
            raw_path, _, query = event.raw_path.decode("latin-1").partition("?")
            path = unquote(raw_path)  # as the scope's
            bounds = self.bounds
            self.buffer = ByteBuffer(bounds.message_bytes(path, query), bounds.wide_text_bytes)
        elif isinstance(event, StreamClosed) and not self.closed:
            closed = self.state in {ws_stream.ASGIWebsocketState.CLOSED}
            self.leave(1000 if closed else 1006)  # the codes hypercorn itself would report
        await super().handle(event)

    async def _handle_events(self) -> None:
        await super()._handle_events()
        if isinstance(self.buffer, ByteBuffer) and self.buffer.overflowed:
            self.leave(1009)  # after hypercorn's close frame has gone out, not while it goes

    async def app_send(self, message: Any) -> None:
        if message is None:  # the app has returned: nothing waits on its queue any more
            self.leave(self.gone_code)
        await super().app_send(message)

    async def _accept(self, message: Any) -> None:
        self.handshake.extensions = None  # permessage-deflate (and any extension) declined
        await super()._accept(message)

    def leave(self, code: int) -> None:
        """The client has gone (or the app has returned): stop queueing, wake the app."""
        if self.gone.is_set():
            return
        self.gone_code = code
        self.gone.set()
        for scope in (self._putting, self.receiving):
            if scope is not None:
                scope.cancel()

    async def _put_unless_gone(self, message: dict[str, Any]) -> None:
        assert self._put is not None
        if self.gone.is_set():
            return  # the app reads `websocket.disconnect` from `_Watched.receive` instead
        with trio.CancelScope() as self._putting:
            await self._put(message)
        self._putting = None


class _Watched:
    """The app as hypercorn calls it, with the `GONE` extension and a receive that answers
    `websocket.disconnect` as soon as the stream knows the client has gone."""

    def __init__(self, app: Any, stream: BoundedWSStream) -> None:
        self.app, self.stream = app, stream

    async def __call__(
        self, scope: Any, receive: Any, send: Any, sync_spawn: Any, call_soon: Any
    ) -> None:
        scope["extensions"] = {**scope.get("extensions", {}), GONE: self.stream.gone}
        connected = False

        async def watched_receive() -> dict[str, Any]:
            nonlocal connected
            stream = self.stream
            if connected and not stream.gone.is_set():  # `websocket.connect` is always first
                with trio.CancelScope() as stream.receiving:
                    message: dict[str, Any] = await receive()
                    stream.receiving = None
                    return message
                stream.receiving = None
            elif not connected:
                connected = True
                first: dict[str, Any] = await receive()
                return first
            return {"type": "websocket.disconnect", "code": stream.gone_code}

        await self.app(scope, watched_receive, send, sync_spawn, call_soon)


def install() -> None:
    """Make hypercorn's HTTP/1.1 and HTTP/2 protocols create `BoundedWSStream`s; hypercorn
    configs carry `WebSocketBounds` as `chorus_websocket_bounds` (without, every path gets
    `websocket_max_message_size`, counted in bytes)."""
    guard()  # and one connection's protocol error ends that connection, not the server
    for name in ("_accept", "_handle_events", "app_send", "handle"):
        if name not in vars(ws_stream.WSStream):
            raise RuntimeError(f"hypercorn's WSStream has no {name}: see service/serving.py")
    for module in (h11, h2):
        if getattr(module, "WSStream", None) not in (ws_stream.WSStream, BoundedWSStream):
            raise RuntimeError(f"{module.__name__} makes no WSStream: see service/serving.py")
        setattr(module, "WSStream", BoundedWSStream)  # noqa: B010 (no WSStream in h11's stubs)
