"""`Refusal`: a request or WebSocket handshake turned away with an HTTP status.

Raised by authentication, the origin check, the session gate and the callers of the rate
limiter; answered as JSON `{"error": {"code", "message"}}` with `Retry-After` when there is one
(and `WWW-Authenticate` for 401). On a WebSocket it goes out before the upgrade
(`service.security.deny_handshake`).
"""

from __future__ import annotations

import msgspec
from starlette.responses import Response


class _ErrorBody(msgspec.Struct):
    code: str
    message: str


class _ErrorResponse(msgspec.Struct):
    error: _ErrorBody


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
        body = msgspec.json.encode(_ErrorResponse(_ErrorBody(self.code, self.message)))
        return Response(body, self.status_code, self.headers, "application/json")
