"""The app's typed runtime: what the routes use, built by the lifespan, reached one way.

Two frozen records, held in one slot under one key of the app's `state` (touched only here):

* `Setup` exists from `create_app()` on, before anything runs: the settings, the security
  configuration (with the `Limits`), the `ActorWatch` that names a dead actor and the
  `TicketBook` of WebSocket tickets (shared with `SecurityMiddleware`, which redeems them).
* `Runtime` exists while the lifespan runs (`service/app.py`): the setup's pieces, the stream
  options the loaded model implies, the long-lived actors' handles (transcriber, VAD, store,
  rate limiter) and the admission state (session gate, capacity meter, live sessions). The lifespan
  builds it once the actors are open and sets it with `running(app, runtime)` around its
  `yield`; leaving that block clears it, before the actors close, so no handle outlives the
  lifespan.

A route reaches them through `Runtime.of(request)` (or `Setup.of(request)` for what exists
before start-up) at the top of the request and hands the pieces on: `runtime.sessions` is what
`service.session.admission` takes, never the app. Code outside a request (the CLI, tests) uses
`runtime(app)` and `setup(app)`. Before the lifespan has started, or after it has ended, the
runtime is refused with `NotRunning`: a 503 `Refusal` (`not_running`) that the app's exception
handler answers (`exception_handlers()`), never an `AttributeError` or a stale handle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import attrs
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ExceptionHandler
from starlette.websockets import WebSocket

from actors.speech.vad_actor import VadHandle
from service.config import Settings
from service.policy.refusal import Refusal, drain_body
from service.policy.security import SecurityConfig, refuse_websocket
from service.policy.tickets import TicketBook
from service.session.admission import SessionServices
from service.supervision import ActorWatch

__all__ = [
    "NotRunning",
    "Runtime",
    "Setup",
    "answer_not_running",
    "exception_handlers",
    "install",
    "running",
    "runtime",
    "setup",
]


class NotRunning(Refusal):
    """The app's lifespan is not running: it has not started yet, or it has ended."""

    def __init__(self, *, ended: bool) -> None:
        if ended:
            super().__init__(503, "not_running", "the server has shut down")
        else:
            super().__init__(503, "not_running", "the server is starting", retry_after=5)
        self.ended = ended


@attrs.frozen
class Setup:
    """What the app holds from `create_app()` on, before its lifespan runs."""

    settings: Settings
    security: SecurityConfig
    actors: ActorWatch  # which long-lived actor died, for `/health`
    tickets: TicketBook = attrs.field(factory=TicketBook)  # issued here, redeemed at handshakes

    @classmethod
    def of(cls, connection: HTTPConnection) -> Setup:
        return setup(connection.app)


@attrs.frozen(kw_only=True)
class Runtime(SessionServices):
    """What the routes use while the lifespan runs; every handle is open.

    It is the `SessionServices` that sessions and uploads are admitted and run with (the
    settings, the stream options, the actors' handles and the admission state), plus the
    setup's security configuration and actor watch, which the routes read and sessions do not.
    """

    vad: VadHandle  # the app always runs the shared VAD actor
    security: SecurityConfig
    actors: ActorWatch

    @classmethod
    def of(cls, connection: HTTPConnection) -> Runtime:
        """The runtime of the app serving `connection`, or `NotRunning`."""
        return runtime(connection.app)

    @property
    def sessions(self) -> SessionServices:
        """What admitting and running a session (or admitting an upload) uses: this runtime,
        handed on as the narrower record, so a session sees no more than it needs."""
        return self


@attrs.define
class _Slot:
    """The app's records: the setup always, the runtime while the lifespan runs."""

    setup: Setup
    runtime: Runtime | None = None
    ended: bool = False


def install(app: Starlette, app_setup: Setup) -> None:
    """Give `app` (just built by `create_app()`) its setup and no runtime yet: the one name
    kept in `app.state`, read only by `_slot`."""
    app.state.chorus = _Slot(app_setup)


def _slot(app: Starlette) -> _Slot:
    try:
        slot = app.state.chorus
    except AttributeError:
        slot = None
    if not isinstance(slot, _Slot):
        raise TypeError(f"{app!r} was not built by service.app.create_app()")
    return slot


def setup(app: Starlette) -> Setup:
    """`app`'s settings, security configuration and actor watch."""
    return _slot(app).setup


def runtime(app: Starlette) -> Runtime:
    """`app`'s runtime while its lifespan runs; `NotRunning` before or after."""
    slot = _slot(app)
    if slot.runtime is None:
        raise NotRunning(ended=slot.ended)
    return slot.runtime


@contextmanager
def running(app: Starlette, built: Runtime) -> Iterator[Runtime]:
    """`built` is `app`'s runtime for the block; on leaving it (however it ends) the app has
    none, and later requests are refused with `NotRunning`."""
    slot = _slot(app)
    slot.runtime, slot.ended = built, False
    try:
        yield built
    finally:
        slot.runtime, slot.ended = None, True


def exception_handlers() -> dict[Any, ExceptionHandler]:
    """For `Starlette(exception_handlers=...)`: `NotRunning` answered over HTTP and WebSocket
    alike (Starlette types a handler as one or the other)."""
    return {NotRunning: cast("ExceptionHandler", answer_not_running)}


async def answer_not_running(connection: HTTPConnection, error: Exception) -> Response | None:
    """The app's exception handler for `NotRunning`: 503 before a WebSocket upgrade, or as an
    HTTP answer (a small body read first, as for every refusal)."""
    if not isinstance(error, NotRunning):
        raise error
    if isinstance(connection, WebSocket):
        await refuse_websocket(connection, error)
        return None
    if isinstance(connection, Request):
        await drain_body(connection.receive)
    return error.response()
