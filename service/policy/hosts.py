"""Which names this server answers to: the `Host` allowlist, and what counts as loopback.

Pure (no I/O). `AllowedHosts` is `CHORUS_ALLOWED_HOSTS` plus the names that are always safe (the
loopback names and the bind address); `service.policy.security.SecurityMiddleware` checks every HTTP
request's and WebSocket handshake's `Host` against it. That defeats DNS rebinding: a page on
`evil.example` whose name is made to resolve to 127.0.0.1 reaches the server with
`Host: evil.example`, which is not on the list, so it never reads or deletes a local user's
transcripts. The Origin check cannot catch it (the page and the server look like one origin).

`is_loopback()` is what `chorus serve` asks before it starts without API keys.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

import attrs

__all__ = ["LOOPBACK_NAMES", "AllowedHosts", "host_name", "is_loopback"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
# a `Host` header: a DNS name or IPv4 address, or a bracketed IPv6 address; an optional port
_HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::[0-9]{1,5})?")


def host_name(value: str) -> str | None:
    """The name in a `Host` header or a configured entry, in lower case without the port or a
    trailing dot; an IPv6 address in brackets. None when it is no host at all (a browser never
    sends one with `@`, spaces or other characters, so those are refused rather than parsed)."""
    text = value.strip().lower()
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address, as in `--host ::1`
    found = _HOST.fullmatch(text)
    if found is None:
        return None
    name = found["name"]
    return name if name.startswith("[") else name.removesuffix(".")


def is_loopback(host: str) -> bool:
    """Whether binding to `host` reaches only this machine: 127.0.0.0/8, ::1 or `localhost`."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@attrs.frozen
class AllowedHosts:
    """`CHORUS_ALLOWED_HOSTS`: names a request's `Host` may carry besides the loopback names and
    the bind address; `*` allows any (behind a proxy that checks it)."""

    names: frozenset[str] = LOOPBACK_NAMES
    any: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str], bind_host: str | None = None) -> AllowedHosts:
        given = [p.strip() for p in environ.get("CHORUS_ALLOWED_HOSTS", "").split(",")]
        names = set(LOOPBACK_NAMES)
        for entry in (p for p in [*given, bind_host or ""] if p and p != "*"):
            if (name := host_name(entry)) is None:
                raise ValueError(f"CHORUS_ALLOWED_HOSTS: {entry!r} is not a host name")
            names.add(name)
        return cls(frozenset(names), "*" in given)

    def allows(self, host: str | None) -> bool:
        """A listed name on any port. No `Host` at all passes: browsers always send one (HTTP/2's
        `:authority` arrives as `host`), so its absence is an HTTP/1.0 tool, not a web page."""
        if host is None or self.any:
            return True
        return host_name(host) in self.names
