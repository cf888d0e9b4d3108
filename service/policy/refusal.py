"""`Refusal`: a request or WebSocket handshake turned away with an HTTP status.

Raised by authentication, the origin check, the session gate and the callers of the rate
limiter; answered as JSON `{"error": {"code", "message"}}` with `Retry-After` when there is one
(and `WWW-Authenticate` for 401). On a WebSocket it goes out before the upgrade
(`service.policy.security.deny_handshake`).
"""

from __future__ import annotations

import msgspec
import trio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

DRAIN_BYTES = 256 * 1024  # a refused request body up to this size is read before answering
DRAIN_S = 2.0


class RefusalError(msgspec.Struct):
    code: str
    message: str


class RefusalBody(msgspec.Struct):
    error: RefusalError


class Refusal(Exception):
    """A request or handshake that is turned away with an HTTP status."""

    def __init__(
        self, status_code: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status_code, self.code, self.message = status_code, code, message
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.status_code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="chorus"'
        return headers

    def response(self) -> Response:
        body = msgspec.json.encode(RefusalBody(RefusalError(self.code, self.message)))
        return Response(body, self.status_code, self.headers, "application/json")


async def answer_http(refusal: Refusal, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer an HTTP request with `refusal`, first reading (and dropping) a small body.

    A server that answers while the client is still sending closes the connection under it,
    and the client may then see the reset instead of the answer ("server disconnected").
    Small bodies, which is what a browser's form or a misconfigured client sends, are read
    first (at most `DRAIN_BYTES`, `DRAIN_S`); a bigger one is not worth reading: it gets the
    answer and the close.
    """
    await drain_body(receive)
    await refusal.response()(scope, receive, send)


async def drain_body(receive: Receive) -> None:
    """Read and drop a request body that is refused unread, up to `DRAIN_BYTES`/`DRAIN_S`."""
    read = 0
    with trio.move_on_after(DRAIN_S):
        while read <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
