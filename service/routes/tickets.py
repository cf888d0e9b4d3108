"""`POST /v1/tickets`: a single-use WebSocket ticket for the caller's key.

The caller is authenticated in front of this route (`SecurityMiddleware`, the key in a header:
HTTP routes take no key from the URL); the ticket is issued to the client that key is, so a
handshake with it is that tenant's (an admin key's ticket sees all). The `TicketBook` lives in
the app's `Setup` and exists from `create_app()` on; nothing here owns a task. A server without
keys admits every handshake, so its tickets are answered but not kept: clients can take the
same steps against either kind of server, and unkeyed callers (one identity per address) cannot
fill the book.
"""

from __future__ import annotations

import secrets

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse

from service.policy.caller import Caller
from service.policy.tickets import Ticket
from service.runtime import Setup


async def issue_ticket(request: Request) -> JSONResponse:
    """201 `{"ticket": …, "expires_in": 60}`; no caching anywhere."""
    setup = Setup.of(request)
    book = setup.tickets
    if setup.security.api_keys.keys:
        ticket = book.issue(Caller.of(request).client)
    else:
        ticket = Ticket(secrets.token_urlsafe(32), book.ttl_s)
    headers = {"Cache-Control": "no-store"}
    return JSONResponse(attrs.asdict(ticket), status_code=201, headers=headers)
