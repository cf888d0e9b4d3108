"""One connection's protocol error ends that connection, never the server.

hypercorn 0.18's trio worker runs each accepted connection as `TCPServer.run` under
`trio.serve_listeners`, whose handler nursery is the server's: an exception that leaves one
connection's `run` cancels every other connection and stops the process. The app's own errors
never get there (hypercorn's task group logs them), but the protocol layer's can. One does, by
a race a client can provoke: the server finishes a response that closes the connection
(`TCPServer._close` sends EOF outside the send lock, and trio's `send_eof` holds the socket's
send side across a checkpoint) while the client's own close arrives in the middle of a request
body, so h11 raises, hypercorn answers it with an error response, and that `send_all` meets the
EOF in progress: `trio.BusyResourceError` out of `run`, and the server was gone (seen as the
soak's slow-body attack, which closes the moment the upload's minimum rate answers 408).

`guard()`, called by `service.serving.install()` with the other changes to hypercorn, wraps
`TCPServer.run` so that an `Exception` from one connection is logged and ends that connection
(its stream is closed by `run`'s own `finally`); cancellation and `KeyboardInterrupt` still pass.
No task is owned here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from hypercorn.trio import tcp_server

log = logging.getLogger("chorus.serving")

_GUARDED = "_chorus_guarded"

Run = Callable[[tcp_server.TCPServer], Awaitable[None]]


def guard() -> None:
    """Wrap hypercorn's `TCPServer.run` (once; later calls change nothing)."""
    run: Run = tcp_server.TCPServer.run
    if getattr(run, _GUARDED, False):
        return

    async def guarded_run(self: tcp_server.TCPServer) -> None:
        try:
            await run(self)
        except Exception:
            log.exception("a connection ended by an error in hypercorn's protocol layer")

    setattr(guarded_run, _GUARDED, True)
    tcp_server.TCPServer.run = guarded_run  # type: ignore[method-assign]
