"""WebSocket tickets: a key, sent in a header, traded for a token that may go in a URL.

Browsers cannot set headers on a WebSocket, so a key would have to travel in the URL (or the
subprotocol), where proxies and access logs keep it. `POST /v1/tickets` (the key in
`Authorization`) answers a ticket instead: 32 random bytes, good for one WebSocket handshake
within `TICKET_TTL_S`, on behalf of the client (tenant) whose key asked for it. A handshake
takes it as `?ticket=`, or wherever it takes a key (`?token=`, the `token` subprotocol,
`Authorization`), so a client built for keys (Deepgram's browser SDK) can use one unchanged.

`TicketBook` is the only state: plain memory of this process (a ticket is redeemed on the
replica that issued it, or refused), touched only from the event loop's thread, with no task
of its own. It keeps a SHA-256 of each ticket, never the ticket, with its client and expiry.
Each client holds at most `MAX_TICKETS_PER_CLIENT` unredeemed tickets: asking for one more
forgets its oldest, so the book holds at most that many per configured key, whatever callers
do. A ticket is forgotten when redeemed, so a second use fails; an expired, unknown or reused
ticket all fail alike (`redeem` answers None: the handshake gets the same 401 as a wrong key).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import deque
from collections.abc import Callable

import attrs

__all__ = ["MAX_TICKETS_PER_CLIENT", "TICKET_TTL_S", "Ticket", "TicketBook"]

TICKET_TTL_S = 60.0
MAX_TICKETS_PER_CLIENT = 16


@attrs.frozen
class Ticket:
    """What `POST /v1/tickets` answers."""

    ticket: str = attrs.field(repr=False)
    expires_in: float


@attrs.frozen
class _Held:
    client: str
    expires_at: float


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode()).digest()


@attrs.define
class TicketBook:
    """Single-use tickets by the digest of each, and each client's digests, oldest first."""

    ttl_s: float = TICKET_TTL_S
    per_client: int = MAX_TICKETS_PER_CLIENT
    clock: Callable[[], float] = time.monotonic
    _held: dict[bytes, _Held] = attrs.field(factory=dict, init=False)
    _by_client: dict[str, deque[bytes]] = attrs.field(factory=dict, init=False)

    def issue(self, client: str) -> Ticket:
        """A new ticket for `client`; its oldest one is forgotten when it holds too many."""
        now = self.clock()
        mine = self._by_client.setdefault(client, deque())
        while mine and (len(mine) >= self.per_client or self._held[mine[0]].expires_at <= now):
            del self._held[mine.popleft()]
        ticket = secrets.token_urlsafe(32)
        digest = _digest(ticket)
        self._held[digest] = _Held(client, now + self.ttl_s)
        mine.append(digest)
        return Ticket(ticket, self.ttl_s)

    def redeem(self, ticket: str) -> str | None:
        """The client `ticket` was issued to, once: None when it is unknown, used or expired."""
        digest = _digest(ticket)
        held = self._held.pop(digest, None)
        if held is None:
            return None
        mine = self._by_client[held.client]
        mine.remove(digest)
        if not mine:
            del self._by_client[held.client]
        return held.client if self.clock() < held.expires_at else None

    def __len__(self) -> int:
        return len(self._held)
