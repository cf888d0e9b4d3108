"""The HAProxy agent: a small TCP server that answers each connection with one line and closes.

Ownership: the app's lifespan (`service/app.py`) enters `agent_for(runtime)`, so an
app mounted as an ASGI sub-app runs it too; with `CHORUS_AGENT_PORT` set that is
`open_agent()`, which owns one nursery holding `trio.serve_listeners`, whose handler tasks each
answer one connection; leaving it cancels them and closes the port. A port that cannot be bound
fails the lifespan's start-up.

Each connection gets its line at once: `reply()`, the admission snapshot of that moment
(`service.session.headroom.agent_snapshot`) as `service.policy.agent.agent_reply` words it,
then an end of writing. What the peer sends (HAProxy's `agent-send`, or garbage) is read and
dropped, at most `READ_LIMIT` bytes for at most `LINGER_S`, so that closing with unread bytes
does not reset the connection under a reply the peer has yet to read; then it is closed. A
peer that resets the connection ends its own handler only. At most `MAX_CONNECTIONS` are
answered at once (HAProxy asks once per check interval per server); one over that is closed
at once, unanswered, so a flood of connections that linger holds a bounded number of file
descriptors and tasks. The port is not authenticated: bind it to the private network only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from functools import partial

import trio

from service.policy.agent import agent_reply
from service.runtime import Runtime
from service.session.headroom import agent_snapshot

__all__ = ["LINGER_S", "MAX_CONNECTIONS", "READ_LIMIT", "agent_for", "open_agent"]

log = logging.getLogger("chorus.agent")

READ_LIMIT = 4096  # bytes of a peer's message read and dropped before the close
LINGER_S = 1.0  # how long a peer that neither sends nor closes holds its handler
MAX_CONNECTIONS = 32  # answered at once; more are closed unanswered

AgentReply = Callable[[], bytes]


def agent_for(runtime: Runtime) -> AbstractAsyncContextManager[int | None]:
    """The agent of a running app: `open_agent` on `agent_port` (on `agent_host`, or the serve
    host) answering from `runtime`'s admission and actor watch, or nothing (None) when the
    port is 0."""
    settings = runtime.settings
    if not settings.agent_port:
        return nullcontext(None)

    def reply() -> bytes:
        failed = bool(runtime.actors.died)
        return agent_reply(agent_snapshot(runtime.sessions, failed=failed))

    return open_agent(settings.agent_host or settings.host, settings.agent_port, reply)


@asynccontextmanager
async def open_agent(
    host: str, port: int, reply: AgentReply, *, max_connections: int = MAX_CONNECTIONS
) -> AsyncIterator[int]:
    """Answer every connection to `host:port` with `reply()` until the block ends, at most
    `max_connections` at once; yields the port bound (`port` 0: a free one)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]
    handler = partial(answer_within, trio.CapacityLimiter(max_connections), reply)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        log.info("HAProxy agent on %s:%d", host, bound)
        yield bound
        nursery.cancel_scope.cancel()


async def answer_within(
    limiter: trio.CapacityLimiter, reply: AgentReply, stream: trio.SocketStream
) -> None:
    """`answer` while the limiter has room; else close the connection at once."""
    try:
        limiter.acquire_nowait()
    except trio.WouldBlock:
        await trio.aclose_forcefully(stream)
        return
    try:
        await answer(reply, stream)
    finally:
        limiter.release()


async def answer(reply: AgentReply, stream: trio.SocketStream) -> None:
    """One connection: the line, the end of writing, a bounded read of what came, the close."""
    async with stream:
        try:
            await stream.send_all(reply())
            await stream.send_eof()
            read = 0
            with trio.move_on_after(LINGER_S):
                while read < READ_LIMIT and (data := await stream.receive_some(READ_LIMIT)):
                    read += len(data)
        except trio.BrokenResourceError:
            pass  # the peer went first: nothing is owed to it
