"""One load-generator client: streams a conversation to `/v1/stream` at real-time pace and
records every frame's arrival time and every audio chunk's send time.

`stream_conversation()` owns one WebSocket (trio-websocket) and one nursery with a receiver task;
the sender runs in the calling task. The session ends when the server has answered `stopped`
(or closed), or when `drain_s` has passed after the last chunk; leaving the nursery cancels the
receiver and closing the socket follows. Nothing is raised for what the server does: a refusal
(HTTP 503 before the upgrade, or close 1013 before `ready`), a failure or a timeout is written
into the returned `SessionRecord`, so one bad session never takes the run down.

`converse()` (connect, handshake, then a protocol's own `talk`) and `SessionLog` are shared with
`bench.peer`, which speaks WhisperLive's protocol and records its messages as native frames; a
`Driver` tells the bench which of the two a server gets.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs
import msgspec
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from bench.audio import SAMPLE_RATE
from bench.conversation import Conversation, chunks
from protocol.native import Error, Ready, ServerFrame, Stopped, server_decoder
from service.websocket_client import answer_pings_only_while_open

answer_pings_only_while_open()  # trio-websocket's pong after its own close (see there)

Outcome = Literal["completed", "refused", "failed"]
TRY_AGAIN_LATER = 1013
STOP_MESSAGE = '{"type":"stop"}'
CLOSE_GRACE_S = 2.0


@attrs.frozen
class StreamOptions:
    speed: float = 1.0  # 2.0 streams twice as fast as real time
    chunk_s: float = 0.1
    drain_s: float = 30.0  # how long to wait for `stopped` after the last chunk
    connect_timeout_s: float = 10.0
    language: str = "en"
    interim: bool = True  # False asks Chorus for finals only (`interim=false`): the model's ceiling


@attrs.frozen
class Arrival:
    at: float  # trio.current_time() when the frame came out of the socket
    frame: ServerFrame


@attrs.frozen
class SessionRecord:
    client: int
    conversation: Conversation
    outcome: Outcome
    reason: str  # why it was refused or failed; empty when completed
    started: bool  # the WebSocket handshake succeeded
    audio_ends: tuple[float, ...]  # audio time at the end of each chunk sent, increasing
    sent_at: tuple[float, ...]  # when each of those chunks was handed to the socket
    send_lag_s: float  # worst lateness of a send against the real-time schedule
    arrivals: tuple[Arrival, ...]
    close_code: int | None

    @property
    def audio_sent_s(self) -> float:
        return self.audio_ends[-1] if self.audio_ends else 0.0


def stream_url(base: str, *, language: str = "en") -> str:
    """`ws://host:port/v1/stream?…` from a server's `http://host:port` (or a `ws://` base)."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = urlencode({"sample_rate": SAMPLE_RATE, "encoding": "pcm_s16le", "language": language})
    return urlunsplit((scheme, parts.netloc, "/v1/stream", query, ""))


@attrs.define
class SessionLog:
    """Mutable while the session runs; frozen into a `SessionRecord` at the end."""

    audio_ends: list[float] = attrs.Factory(list)
    sent_at: list[float] = attrs.Factory(list)
    send_lag_s: float = 0.0
    arrivals: list[Arrival] = attrs.Factory(list)
    started: bool = False
    problem: str = ""
    undecodable: str = ""  # the first frame that did not match the protocol
    close: CloseReason | None = None
    finished: trio.Event = attrs.Factory(trio.Event)  # `stopped` arrived, or the socket closed
    closed: trio.Event = attrs.Factory(trio.Event)

    def seen(self, kind: type[ServerFrame]) -> bool:
        return any(isinstance(arrival.frame, kind) for arrival in self.arrivals)

    def fatal_error(self) -> Error | None:
        for arrival in self.arrivals:
            if isinstance(arrival.frame, Error) and arrival.frame.fatal:
                return arrival.frame
        return None

    def record(
        self, client: int, conversation: Conversation, outcome: Outcome, reason: str
    ) -> SessionRecord:
        return SessionRecord(
            client=client,
            conversation=conversation,
            outcome=outcome,
            reason=reason,
            started=self.started,
            audio_ends=tuple(self.audio_ends),
            sent_at=tuple(self.sent_at),
            send_lag_s=self.send_lag_s,
            arrivals=tuple(self.arrivals),
            close_code=self.close.code if self.close else None,
        )


Talk = Callable[[WebSocketConnection, Conversation, StreamOptions, SessionLog], Awaitable[None]]


class Streamer(Protocol):
    """Streams one conversation to a WebSocket URL and records what happened."""

    async def __call__(
        self,
        url: str,
        conversation: Conversation,
        options: StreamOptions,
        *,
        client: int = 0,
        deadline: float = math.inf,
    ) -> SessionRecord: ...


@attrs.frozen
class Driver:
    """How the bench talks to one kind of server."""

    name: str
    ws_url: Callable[[str, str], str]  # (server's http://host:port, language) -> WebSocket URL
    stream: Streamer
    has_health: bool = True  # it answers `GET /health` (sessions, transcriber batches)
    # where its text's audio end comes from, for caption delay (bench.timeline); empty when
    # its protocol gives none, and caption delay is then not measured
    caption_source: str = ""


async def stream_conversation(
    url: str,
    conversation: Conversation,
    options: StreamOptions,
    *,
    client: int = 0,
    deadline: float = math.inf,
) -> SessionRecord:
    """Stream `conversation` to the WebSocket `url` and record what happened.

    At `deadline` (trio time) the session is abandoned and recorded as failed.
    """
    log = SessionLog()
    rejected = await converse_until(url, conversation, options, log, _talk, deadline)
    outcome, reason = _judge(log, rejected)
    return log.record(client, conversation, outcome, reason)


async def converse_until(
    url: str,
    conversation: Conversation,
    options: StreamOptions,
    log: SessionLog,
    talk: Talk,
    deadline: float,
) -> ConnectionRejected | None:
    """`converse()`, abandoned (and noted in `log.problem`) at `deadline` (trio time)."""
    rejected: ConnectionRejected | None = None
    with trio.move_on_at(deadline) as limit:
        rejected = await converse(url, conversation, options, log, talk)
    if limit.cancelled_caught:
        log.problem = "abandoned at the run's time limit"
    return rejected


async def converse(
    url: str, conversation: Conversation, options: StreamOptions, log: SessionLog, talk: Talk
) -> ConnectionRejected | None:
    """Connect, do the WebSocket handshake, then `talk`; connection trouble goes into `log`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        with trio.fail_after(options.connect_timeout_s):
            stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as error:
        log.problem = f"cannot connect: {error!r}"
        return None
    rejected: list[ConnectionRejected] = []
    # The TCP stream is ours to close: trio-websocket's client leaves it open when the server
    # is the one that closes the WebSocket.
    async with stream:
        try:
            async with trio.open_nursery() as nursery:  # trio-websocket's reader task
                with trio.fail_after(options.connect_timeout_s):
                    socket = await wrap_client_stream(
                        nursery, stream, f"{host}:{port}", f"{parts.path}?{parts.query}"
                    )
                log.started = True
                await talk(socket, conversation, options, log)
                nursery.cancel_scope.cancel()
        except* ConnectionRejected as group:
            rejected += [
                error for error in group.exceptions if isinstance(error, ConnectionRejected)
            ]
        except* trio.TooSlowError:
            log.problem = f"no handshake answer within {options.connect_timeout_s:g} s"
        except* (trio.BrokenResourceError, OSError) as group:
            log.problem = f"connection broken: {group.exceptions[0]!r}"
    return rejected[0] if rejected else None


async def _talk(
    socket: WebSocketConnection,
    conversation: Conversation,
    options: StreamOptions,
    log: SessionLog,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_receive_frames, socket, log)
        await _send_audio(socket, conversation, options, log)
        with trio.move_on_after(options.drain_s):
            await log.finished.wait()
        if not log.finished.is_set():
            log.problem = f"no `stopped` within {options.drain_s:g} s of the last chunk"
        else:
            with trio.move_on_after(CLOSE_GRACE_S):  # after `stopped` the server closes (1000)
                await log.closed.wait()
        nursery.cancel_scope.cancel()
    with trio.move_on_after(CLOSE_GRACE_S):
        await socket.aclose()  # does nothing when the server closed first


def _judge(log: SessionLog, rejected: ConnectionRejected | None) -> tuple[Outcome, str]:
    if rejected is not None:
        if rejected.status_code == 503:
            return "refused", "HTTP 503"
        return "failed", f"handshake rejected with HTTP {rejected.status_code}"
    close_code = log.close.code if log.close else None
    if close_code == TRY_AGAIN_LATER and not log.seen(Ready):
        return "refused", "closed 1013 before ready"
    if log.undecodable:
        return "failed", log.undecodable
    if log.seen(Stopped):
        return "completed", ""
    if (fatal := log.fatal_error()) is not None:
        return "failed", f"error {fatal.code}: {fatal.message}"
    if log.problem:
        return "failed", log.problem
    if log.close is not None:
        return "failed", f"closed {log.close.code} {log.close.reason or ''}".strip()
    return "failed", "ended without `stopped`"


async def _send_audio(
    socket: WebSocketConnection,
    conversation: Conversation,
    options: StreamOptions,
    log: SessionLog,
) -> None:
    """Send each chunk when its last sample would have been captured, then `stop`."""
    if not await send_chunks(socket, conversation, options, log):
        return
    try:
        await socket.send_message(STOP_MESSAGE)
    except ConnectionClosed:
        return


async def send_chunks(
    socket: WebSocketConnection,
    conversation: Conversation,
    options: StreamOptions,
    log: SessionLog,
    encode: Callable[[bytes], bytes] | None = None,
) -> bool:
    """Send each chunk (PCM16, or what `encode` makes of it) when its last sample would have
    been captured; False when the connection closed first."""
    begin = trio.current_time()
    try:
        for chunk in chunks(conversation, options.chunk_s):
            due = begin + chunk.audio_end / options.speed
            await trio.sleep_until(due)
            if log.closed.is_set():  # the receiver knows why
                return False
            payload = encode(chunk.payload) if encode is not None else chunk.payload
            await socket.send_message(payload)
            now = trio.current_time()
            log.audio_ends.append(chunk.audio_end)
            log.sent_at.append(now)
            log.send_lag_s = max(log.send_lag_s, now - due)
    except ConnectionClosed:
        return False
    return True


async def _receive_frames(socket: WebSocketConnection, log: SessionLog) -> None:
    while True:
        try:
            message = await socket.get_message()
        except ConnectionClosed as closed:
            log.close = closed.reason
            log.closed.set()
            log.finished.set()
            return
        at = trio.current_time()
        try:
            frame = server_decoder.decode(message)
        except msgspec.DecodeError as error:
            log.undecodable = log.undecodable or f"undecodable frame {message!r:.120}: {error}"
            continue
        log.arrivals.append(Arrival(at=at, frame=frame))
        if isinstance(frame, Stopped):
            log.finished.set()


def _chorus_url(base: str, language: str) -> str:
    return stream_url(base, language=language)


CHORUS_DRIVER = Driver(
    name="chorus",
    ws_url=_chorus_url,
    stream=stream_conversation,
    caption_source="the `end` (audio time) of native `partial` and `final` frames",
)
