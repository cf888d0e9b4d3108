"""Who the caller is: the identity of the API key it offers, or without one, of its address.

Pure (no I/O), usable from HTTP routes and WebSocket handshakes alike. `authenticate()` reads a
key from `Authorization: Bearer|Token <key>`, the `token` (or `ticket`) query parameter, or a
`Sec-WebSocket-Protocol: token, <key>` offer (Deepgram's browser style), and compares it with
every configured key in constant time, then, when given a `TicketBook`
(`service/policy/tickets.py`), redeems it as a ticket. A key's identity is "key:<name>" for a
named key, else "key:" and a hash of the key: the key itself is never stored or logged.
`peer_address()` honours `X-Forwarded-For` only when the peer is a trusted proxy, and
`address_identity()` is the identity of a caller without a key ("ip:<address>" for IPv4,
"ip:<prefix>/64" for IPv6).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Collection, Mapping
from pathlib import Path

import attrs

from service.policy.refusal import Refusal
from service.policy.tickets import TicketBook

__all__ = [
    "ApiKeys",
    "IPNetwork",
    "address_identity",
    "authenticate",
    "key_identity",
    "networks",
    "peer_address",
    "trusted",
]

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


def networks(text: str) -> tuple[IPNetwork, ...]:
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
    while trusted(address, proxies) and hops:
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


def trusted(address: str, proxies: Collection[IPNetwork]) -> bool:
    parsed = _address(address)
    return parsed is not None and any(parsed in network for network in proxies)
