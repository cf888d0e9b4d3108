"""`ActorWatch`: which of the app's long-lived actors died, so that `/health` can say so.

The app lifespan (`service/app.py`) opens the store, the rate limiter and the transcriber in
one task of its own, each through `ActorWatch.watch(name, open_x(...))`, and waits there until
shutdown. An actor's nursery cancels what runs inside it when one of its tasks crashes; were
the lifespan itself inside, hypercorn would take the lifespan's failure down with every live
session in it (or, under another server, keep serving with a `/health` that says ok). Here the
crash unwinds the actors' task only: `watch` records which actor died first and of what, logs
it with its traceback, and `/health` answers 503 naming it until a supervisor restarts the
process. It is named once the actors opened inside it have closed: they are cancelled, so that
takes at most the model batch in flight (`wait_died()` returns then). An error that merely
passes through an actor on its way out (it came from an actor opened inside it) is not that
actor's death; nor is a failure to open (start-up fails, as before).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

import attrs
import trio

__all__ = ["ActorWatch"]

log = logging.getLogger("chorus")
T = TypeVar("T")


@attrs.define
class ActorWatch:
    died: dict[str, str] = attrs.field(factory=dict)  # actor name → its error, first death first
    _death: trio.Event = attrs.field(factory=trio.Event)

    async def wait_died(self) -> None:
        """Returns once an actor has died (and `/health` says so)."""
        await self._death.wait()

    @asynccontextmanager
    async def watch(self, name: str, actor: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
        """Enter `actor`; if it dies of an exception of its own, record and log it, and raise."""
        opened = passing_through = False
        try:
            async with actor as handle:
                opened = True
                try:
                    yield handle
                except Exception:
                    passing_through = True
                    raise
        except Exception as error:
            if opened and not passing_through:
                self.died[name] = _describe(error)
                log.error("the %s actor died; /health answers 503", name, exc_info=error)
                self._death.set()
            raise


def _describe(error: BaseException) -> str:
    """`Type: message` of the error itself, not of the nursery's group around it."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"
