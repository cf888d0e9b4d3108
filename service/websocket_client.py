"""trio-websocket, as Chorus's own clients use it (`chorus stream`, the bench, the tests).

trio-websocket 0.12 answers every ping its reader task reads, even after its side has sent a
close: wsproto refuses (`LocalProtocolError`: a pong cannot be sent while closing), the
reader task dies, and its nursery turns that into a stray `trio.Cancelled` out of
`open_websocket_url`. Nothing reports it; the next cancelled scope outside absorbs it, so the
caller's code after the connection silently does not run (a test's assertions, a bench
session's figures). Chorus servers ping every 2 s (`service.cli.hypercorn_settings`), so a
client that closes while a ping is on its way meets this.

`answer_pings_only_while_open()` makes the reader answer a ping only while the connection is
open; a ping that arrives after the client's close is left unanswered, which RFC 6455 allows
(the closing handshake ends the connection either way). Idempotent; no task is owned here.
"""

from __future__ import annotations

from trio_websocket._impl import WebSocketConnection
from wsproto.connection import ConnectionState
from wsproto.events import Ping

_PATCHED = "_chorus_open_only"


def answer_pings_only_while_open() -> None:
    """Wrap `WebSocketConnection._handle_ping_event` (once)."""
    answer = WebSocketConnection._handle_ping_event
    if getattr(answer, _PATCHED, False):
        return

    async def answer_while_open(self: WebSocketConnection, event: Ping) -> None:
        if self._wsproto.state is ConnectionState.OPEN:
            await answer(self, event)

    setattr(answer_while_open, _PATCHED, True)
    WebSocketConnection._handle_ping_event = answer_while_open  # type: ignore[method-assign]
