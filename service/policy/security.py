"""Who may connect: the Host, the Origin and the key of every request and handshake, checked
before the route runs, and refusals before the upgrade.

The pure parts are their own modules: `service/policy/identity.py` (API keys, tickets redeemed
in their place, the client's address and the identity of a caller without a key),
`service/policy/origins.py` (allowed origins, CORS) and `service/policy/hosts.py` (allowed
host names). `SecurityConfig` holds them all with the `Limits` (`service/policy/limits.py`) and
reads them from the environment (`from_env()`); its `identify()` applies them to one scope.

`SecurityMiddleware` applies them to every HTTP request and WebSocket handshake: first the
`Host` (against DNS rebinding: 400 `host_not_allowed`), then the `Origin` of a handshake or a
state-changing request (POST, PUT, PATCH, DELETE: 403 `origin_not_allowed`; a request without
`Origin` is no browser's and passes), then the key (public paths take one when offered, so an
admin key sees `/health`'s details). HTTP requests take the key from `Authorization` only: a
key in a URL ends up in proxies' and servers' logs. WebSocket handshakes, which browsers cannot
give headers, also take it from the URL or the subprotocol, and take a single-use ticket
(`POST /v1/tickets`) wherever they take a key. A refusal is a `Refusal` (status, code, message,
`Retry-After`); on a WebSocket it is answered as a plain HTTP response before the upgrade,
through the ASGI "websocket.http.response" extension (hypercorn has it); a server without it
gets close code 1008 before accept (hypercorn answers 403). The admitted caller goes into the
scope as one `Caller` (`service/policy/caller.py`), which routes read with
`Caller.of(connection)`; the key itself is never stored or logged.

Stack, outermost first: `*config.origins.cors()`, `SecurityMiddleware`, `BodyLimitMiddleware`,
so CORS preflights are answered before any key is asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping

import attrs
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from service.policy.caller import Caller
from service.policy.hosts import AllowedHosts
from service.policy.identity import (
    ApiKeys,
    IPNetwork,
    address_identity,
    authenticate,
    key_identity,
    networks,
    peer_address,
    trusted,
)
from service.policy.limits import Limits, SessionGate
from service.policy.origins import AllowedOrigins
from service.policy.refusal import Refusal, answer_http
from service.policy.tickets import TicketBook

__all__ = [
    "AllowedHosts",
    "AllowedOrigins",
    "ApiKeys",
    "Limits",
    "Refusal",
    "SecurityConfig",
    "SecurityMiddleware",
    "SessionGate",
    "address_identity",
    "authenticate",
    "deny_handshake",
    "key_identity",
    "peer_address",
    "refuse_websocket",
]

log = logging.getLogger("chorus.security")
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@attrs.frozen
class SecurityConfig:
    api_keys: ApiKeys = attrs.field(factory=ApiKeys)
    origins: AllowedOrigins = attrs.field(factory=AllowedOrigins)
    hosts: AllowedHosts = attrs.field(factory=AllowedHosts)
    trusted_proxies: tuple[IPNetwork, ...] = ()
    limits: Limits = attrs.field(factory=Limits)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] = os.environ, *, bind_host: str | None = None
    ) -> SecurityConfig:
        """`bind_host`: the address the server listens on, a name it always answers to."""
        return cls(
            api_keys=ApiKeys.from_env(environ),
            origins=AllowedOrigins.from_env(environ),
            hosts=AllowedHosts.from_env(environ, bind_host),
            trusted_proxies=networks(environ.get("CHORUS_TRUSTED_PROXIES", "")),
            limits=Limits.from_env(environ),
        )

    def log_startup_warnings(self) -> None:
        if not self.api_keys.keys:
            log.warning(
                "no API keys configured (CHORUS_API_KEYS): anyone who can reach it may use it"
            )
        elif not self.api_keys.admin_keys:
            log.warning(
                "API keys but no admin key (CHORUS_ADMIN_KEYS): /metrics and the figures in"
                " /health answer no one"
            )
        if self.origins.any:
            log.warning("CHORUS_ALLOWED_ORIGINS=*: any web page may open streams on this server")
        if self.hosts.any:
            log.warning("CHORUS_ALLOWED_HOSTS=*: nothing here stops DNS rebinding")

    def identify(
        self, scope: Scope, *, public: bool = False, tickets: TicketBook | None = None
    ) -> str:
        """Check the Host, the Origin and the key; the client identity or `Refusal`.

        On a `public` path a key is optional: a valid one identifies the caller, a missing or
        wrong one leaves the caller anonymous (`address_identity`). Only a WebSocket handshake
        reads the query string and redeems `tickets`.
        """
        headers = Headers(scope=scope)
        host = headers.get("host")
        client = scope.get("client")
        if client and trusted(client[0], self.trusted_proxies):
            host = headers.get("x-forwarded-host", host)
        if not self.hosts.allows(host):
            raise Refusal(400, "host_not_allowed", "this Host is not served here")
        changes = scope["type"] == "websocket" or scope["method"] in _STATE_CHANGING
        if changes and not self.origins.allows(headers.get("origin"), host):
            raise Refusal(403, "origin_not_allowed", "this Origin may not use this server")
        websocket = scope["type"] == "websocket"
        query = QueryParams(scope["query_string"] if websocket else b"")
        try:
            identity = authenticate(headers, query, self.api_keys, tickets if websocket else None)
        except Refusal:
            if not public:
                raise
            identity = None
        return identity or address_identity(peer_address(client, headers, self.trusted_proxies))


async def deny_handshake(scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
    """Refuse a WebSocket handshake with an HTTP response (or close 1008 without the extension)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await refusal.response()(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.message})


async def refuse_websocket(websocket: WebSocket, refusal: Refusal) -> None:
    """`deny_handshake` for a Starlette `WebSocket` that has not been accepted."""
    await deny_handshake(websocket.scope, websocket.receive, websocket.send, refusal)


class SecurityMiddleware:
    """Checks the Host (and Origin) of every request and handshake and authenticates those
    outside `public_paths`; admits the caller into the scope as one `Caller` (its client
    identity, whether it sees every tenant, and whether it came without a key that the server
    asks for). On public paths (and CORS preflights) a key is optional."""

    def __init__(
        self,
        app: ASGIApp,
        config: SecurityConfig,
        *,
        # the page and the API docs, as the seeds' FastAPI servers had them: no key needed
        public_paths: Collection[str] = (
            "/",
            "/health",
            "/metrics",
            "/docs",
            "/redoc",
            "/openapi.json",
        ),
        public_prefixes: tuple[str, ...] = ("/static/",),
        tickets: TicketBook | None = None,
        # WebSocket routes that authenticate their callers themselves (Twilio's signature or
        # a key in its `start` message: `service/routes/twilio.py`): a key is optional here
        own_auth_paths: Collection[str] = ("/v1/twilio",),
    ) -> None:
        self.app, self.config, self.tickets = app, config, tickets
        self.public_paths, self.public_prefixes = frozenset(public_paths), public_prefixes
        self.own_auth_paths = frozenset(own_auth_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        public = path in self.public_paths or path.startswith(self.public_prefixes)
        try:
            anonymous = scope["type"] == "http" and (public or scope["method"] == "OPTIONS")
            anonymous = anonymous or (scope["type"] == "websocket" and path in self.own_auth_paths)
            client = self.config.identify(scope, public=anonymous, tickets=self.tickets)
        except Refusal as refusal:
            if scope["type"] == "websocket":
                await deny_handshake(scope, receive, send, refusal)
            else:
                await answer_http(refusal, scope, receive, send)
            return
        keys = self.config.api_keys
        Caller(
            client=client,
            sees_all=keys.sees_all(client),
            anonymous=bool(keys.keys) and not client.startswith("key:"),
        ).admit(scope)
        await self.app(scope, receive, send)
