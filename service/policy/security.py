"""Who may connect: API keys, client identity, allowed origins, and refusals before the upgrade.

Pure parts (no I/O, usable from HTTP routes and WebSocket handshakes alike): `authenticate()`
reads a key from `Authorization: Bearer|Token <key>`, the `token` (or `ticket`) query parameter,
or a `Sec-WebSocket-Protocol: token, <key>` offer (Deepgram's browser style), and compares it
with every configured key in constant time, then, when given a `TicketBook`
(`service/policy/tickets.py`), redeems it as a ticket; `peer_address()` honours
`X-Forwarded-For` only when the peer is a trusted proxy; `AllowedOrigins.allows()` checks a
browser's `Origin`.

`SecurityMiddleware` applies them to every HTTP request and WebSocket handshake: first the
`Host` (`service.policy.hosts.AllowedHosts`, against DNS rebinding: 400 `host_not_allowed`),
then the `Origin` of a handshake or a state-changing request (POST, PUT, PATCH, DELETE: 403
`origin_not_allowed`; a request without `Origin` is no browser's and passes), then the key
(public paths take one when offered, so an admin key sees `/health`'s details). HTTP requests
take the key from `Authorization` only: a key in a URL ends up in proxies' and servers' logs.
WebSocket handshakes, which browsers cannot give headers, also take it from the URL or the
subprotocol, and take a single-use ticket (`POST /v1/tickets`) wherever they take a key. A
refusal is a `Refusal` (status, code, message, `Retry-After`); on a WebSocket it is answered as
a plain HTTP response before the upgrade, through the ASGI "websocket.http.response" extension
(hypercorn has it); a server without it gets close code 1008 before accept (hypercorn answers
403). The admitted client's identity ("key:<hash>", or without a key `address_identity()`:
"ip:<address>" for IPv4, "ip:<prefix>/64" for IPv6) goes in `scope["state"]["client"]`
(`request.state.client`); the key itself is never stored or logged.

`SecurityConfig.from_env()` reads everything here plus the `Limits` (re-exported, with
`SessionGate`, from `service/policy/limits.py`). Stack, outermost first: `*config.origins.cors()`,
`SecurityMiddleware`, `BodyLimitMiddleware`, so CORS preflights are answered before any key
is asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import attrs
from starlette.datastructures import Headers, QueryParams
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from service.policy.hosts import AllowedHosts
from service.policy.limits import Limits, SessionGate
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
    "peer_address",
    "refuse_websocket",
]

log = logging.getLogger("chorus.security")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


def _entries(text: str) -> dict[str, str | None]:
    """`key` or `name:key` entries → {key: name or None}."""
    found: dict[str, str | None] = {}
    for entry in (part.strip() for part in text.split(",")):
        name, colon, key = entry.partition(":")
        if colon and key and _NAME.fullmatch(name):
            found[key] = name
        elif entry:
            found[entry] = None
    return found


@attrs.frozen
class ApiKeys:
    """The keys that may call this server; each is a tenant that sees only its own sessions,
    except `admin_keys`, which see everyone's. A key may carry a name (`name:key`), which is
    then its client identity (`key:name`) in the store, logs and per-client limits."""

    keys: frozenset[str] = attrs.field(default=frozenset(), repr=False)  # never in a log line
    names: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    admin_keys: frozenset[str] = attrs.field(default=frozenset(), repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ApiKeys:
        """`CHORUS_API_KEYS` (comma-separated) and/or `CHORUS_API_KEYS_FILE` (one per line),
        plus `CHORUS_ADMIN_KEYS` (comma-separated); entries are `key` or `name:key`."""
        entries = _entries(environ.get("CHORUS_API_KEYS", ""))
        if path := environ.get("CHORUS_API_KEYS_FILE", "").strip():
            lines = Path(path).read_text().splitlines()  # a missing file is a start-up error
            kept = [line for line in lines if not line.lstrip().startswith("#")]
            entries |= _entries(",".join(kept))
        admins = _entries(environ.get("CHORUS_ADMIN_KEYS", ""))
        entries |= admins
        names = tuple((key, name) for key, name in entries.items() if name)
        return cls(frozenset(entries), names, frozenset(admins))

    def match(self, given: str) -> str | None:
        """The identity of the key `given` matches, comparing with every key in constant time."""
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.encode(), given.encode()):
                found = key
        return None if found is None else self._identity(found)

    def sees_all(self, identity: str | None) -> bool:
        """Whether `identity` may see every tenant's sessions: an admin key, or no keys at all
        (a single-tenant server)."""
        return not self.keys or identity in {self._identity(key) for key in self.admin_keys}

    def _identity(self, key: str) -> str:
        return key_identity(key, dict(self.names).get(key))


def key_identity(key: str, name: str | None = None) -> str:
    """`key:<name>` for a named key, else `key:` and 16 hex digits of the key's SHA-256."""
    return "key:" + (name or hashlib.sha256(key.encode()).hexdigest()[:16])


def _offered_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    if authorization := headers.get("authorization"):
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() in ("bearer", "token") and credentials.strip():
            return credentials.strip()
        raise Refusal(401, "unauthorized", "Authorization must be 'Bearer <key>' or 'Token <key>'")
    if token := query.get("token") or query.get("ticket"):
        return token
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
    if len(offered) >= 2 and offered[0].lower() == "token" and offered[1]:
        return offered[1]  # the server must accept with subprotocol "token"
    return None


def authenticate(
    headers: Mapping[str, str],
    query: Mapping[str, str],
    keys: ApiKeys,
    tickets: TicketBook | None = None,
) -> str | None:
    """The identity of the offered API key (or of the key that bought the offered ticket, when
    `tickets` is given), or None when no keys are configured (open server).

    `headers` must look names up case-insensitively (Starlette's `Headers`). Raises `Refusal`
    (401) when a key is required and is missing or wrong; a used, expired or unknown ticket is
    a wrong key, with the same answer.
    """
    if not keys.keys:
        return None
    offered = _offered_key(headers, query)
    if offered is None:
        raise Refusal(401, "unauthorized", "an API key is required")
    identity = keys.match(offered)
    if identity is None and tickets is not None:
        identity = tickets.redeem(offered)
    if identity is None:
        raise Refusal(401, "unauthorized", "invalid API key")
    return identity


def _networks(text: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p)
    except ValueError as error:
        raise ValueError(f"CHORUS_TRUSTED_PROXIES: {error}") from None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def peer_address(
    client: tuple[str, int] | None, headers: Mapping[str, str], proxies: Collection[IPNetwork]
) -> str:
    """The client's address: the peer, or for a trusted proxy the first untrusted hop."""
    address = client[0] if client else "unknown"
    hops = [hop for hop in headers.get("x-forwarded-for", "").split(",") if hop.strip()]
    while _trusted(address, proxies) and hops:
        hop = _address(hops.pop())
        if hop is None:
            break  # garbage from beyond the proxy: keep the last address we can vouch for
        address = str(hop)
    return address


def address_identity(address: str) -> str:
    """The client identity of a caller without a key: `ip:` and its IPv4 address, or for IPv6
    the /64 it is in. One host is routinely given a whole /64 (SLAAC, privacy addresses), so
    counting each IPv6 address apart would give it 2^64 identities, each with its own session
    caps and rate limits (issue 11, M5). IPv4-mapped IPv6 counts as the IPv4 address, and the
    loopback address as itself."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return f"ip:{parsed.ipv4_mapped}"
        if not parsed.is_loopback:
            return f"ip:{ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64))}"
    return f"ip:{address}"


def _trusted(address: str, proxies: Collection[IPNetwork]) -> bool:
    parsed = _address(address)
    return parsed is not None and any(parsed in network for network in proxies)


def _normal_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case without a default port; None when not an origin."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    keep_port = port is not None and port != _DEFAULT_PORTS[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if keep_port else "")


@attrs.frozen
class AllowedOrigins:
    """`CHORUS_ALLOWED_ORIGINS`: browser origins allowed besides the server's own."""

    origins: frozenset[str] = frozenset()
    any: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AllowedOrigins:
        given = [p.strip() for p in environ.get("CHORUS_ALLOWED_ORIGINS", "").split(",")]
        normal = set()
        for origin in (p for p in given if p and p != "*"):
            if (value := _normal_origin(origin)) is None:
                raise ValueError(f"CHORUS_ALLOWED_ORIGINS: {origin!r} is not an origin")
            normal.add(value)
        return cls(frozenset(normal), "*" in given)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """No `Origin` (not a browser), the same host, or a listed origin."""
        if origin is None or self.any:
            return True
        normal = _normal_origin(origin)
        if normal is None:
            return False  # "null" (sandboxed pages, files) and garbage
        if normal in self.origins:
            return True
        return host is not None and _same_host(normal, host)

    def cors(self) -> list[Middleware]:
        """CORS for the HTTP routes, from the same list; none when unset (same-origin only)."""
        if not (self.any or self.origins):
            return []
        return [
            Middleware(
                CORSMiddleware,
                allow_origins=["*"] if self.any else sorted(self.origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["authorization", "content-type", "range"],
                expose_headers=["retry-after", "content-range", "accept-ranges", "content-length"],
            )
        ]


def _same_host(origin: str, host: str) -> bool:
    """Whether the `Host` a browser connected to is the origin's host and port."""
    scheme, _, netloc = origin.partition("://")
    try:
        parts = urlsplit("//" + host.strip().lower())
        port = parts.port
    except ValueError:
        return False
    if not parts.hostname:
        return False
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    keep_port = port is not None and port != _DEFAULT_PORTS[scheme]
    return netloc == name + (f":{port}" if keep_port else "")


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
            trusted_proxies=_networks(environ.get("CHORUS_TRUSTED_PROXIES", "")),
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
        if client and _trusted(client[0], self.trusted_proxies):
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
    outside `public_paths`; puts the client in `scope["state"]["client"]`, whether it sees
    every tenant in `scope["state"]["sees_all"]`, and whether it came without a key that the
    server asks for in `scope["state"]["anonymous"]`. On public paths (and CORS preflights) a
    key is optional."""

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
    ) -> None:
        self.app, self.config, self.tickets = app, config, tickets
        self.public_paths, self.public_prefixes = frozenset(public_paths), public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        public = path in self.public_paths or path.startswith(self.public_prefixes)
        try:
            anonymous = scope["type"] == "http" and (public or scope["method"] == "OPTIONS")
            client = self.config.identify(scope, public=anonymous, tickets=self.tickets)
        except Refusal as refusal:
            if scope["type"] == "websocket":
                await deny_handshake(scope, receive, send, refusal)
            else:
                await answer_http(refusal, scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["client"] = client
        state["sees_all"] = self.config.api_keys.sees_all(client)
        # keys are configured and none was given (only on a public path): `/health` answers
        # such a caller its bare status, `/metrics` not at all
        state["anonymous"] = bool(self.config.api_keys.keys) and not client.startswith("key:")
        await self.app(scope, receive, send)
