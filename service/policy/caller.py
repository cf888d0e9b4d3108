"""Who is calling, as `SecurityMiddleware` admitted them: one typed record per connection.

`SecurityMiddleware` (`service/policy/security.py`) writes one `Caller` into the connection's
scope (`scope["state"]["caller"]`), and every route reads it back with `Caller.of(connection)`,
as it reads the app's runtime with `Runtime.of(connection)`. This module is the only one that
touches that key. A connection that carries no caller (a route served without the middleware)
is `Caller.NOBODY`: the least-privileged caller there is, so a route mounted without the
middleware shows no other tenant's data, no figures and no metrics.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, ClassVar

import attrs
from starlette.requests import HTTPConnection
from starlette.types import Scope

__all__ = ["Caller"]

_KEY = "caller"


@attrs.frozen
class Caller:
    """The caller's identity and what it may see."""

    # the client identity ("key:<name or hash>", or without a key "ip:<address>"): the tenant
    # whose sessions it owns, and the name its per-client limits and stored sessions go under
    client: str = "anonymous"
    sees_all: bool = False  # an admin key, or a server without keys: every tenant's sessions
    # keys are configured and none was given (only on a public path): `/health` answers such
    # a caller its bare status, `/metrics` not at all
    anonymous: bool = True

    NOBODY: ClassVar[Caller]

    @property
    def tenant(self) -> str | None:
        """The client whose sessions this caller may see; None: everyone's."""
        return None if self.sees_all else self.client

    @classmethod
    def of(cls, connection: HTTPConnection | Scope) -> Caller:
        """The caller of `connection` (a Starlette request or WebSocket, or an ASGI scope);
        `Caller.NOBODY` when the middleware has not admitted one."""
        scope = connection.scope if isinstance(connection, HTTPConnection) else connection
        caller = (scope.get("state") or {}).get(_KEY)
        return caller if isinstance(caller, Caller) else cls.NOBODY

    def admit(self, scope: MutableMapping[str, Any]) -> None:
        """Make this the caller of the connection whose ASGI scope is `scope`."""
        scope.setdefault("state", {})[_KEY] = self


Caller.NOBODY = Caller()
