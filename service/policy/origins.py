"""Which web pages may call this server: the `Origin` allowlist, and CORS from the same list.

Pure (no I/O). `AllowedOrigins` is `CHORUS_ALLOWED_ORIGINS`; `allows()` passes a request with no
`Origin` (no browser's), one from the server's own host, or a listed origin, and refuses
"null" (sandboxed pages, files) and garbage. `service.policy.security.SecurityMiddleware` asks it
for every WebSocket handshake and state-changing HTTP request.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

__all__ = ["AllowedOrigins"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


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
